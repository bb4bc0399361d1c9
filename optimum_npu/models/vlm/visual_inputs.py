"""Host-side preparation of one image for a visual bucket graph, and the inverse after it.

Everything data-dependent happens here, so the graph sees only static shapes: the per-patch
rotary positions ``(h, w)`` (HF's ``rot_pos_emb`` layout: merge blocks of 2x2 patches, row
by row), the attention segment of each patch (one per frame for full attention, one per
window for Qwen2.5-VL window attention), the Qwen2.5-VL window reordering of the patches,
the Qwen3-VL bilinear taps into the learned position grid (HF's own
``get_vision_interpolation_indices_and_weights``: 4 table rows and weights per patch; the graph
gathers and sums them), and the padding to the bucket. Padding rows form a segment of their own (``PAD_SEGMENT``):
they never attend to, or are attended by, an image's patches; their outputs are dropped.

One image (an entry of ``image_grid_thw``: all ``grid_t`` frames of a video) is one graph
call on its own bucket. Packing several images into one bucket would cut padding further
(the segments keep them apart) but couples their latencies; it is left for later.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.vision_utils import get_vision_interpolation_indices_and_weights

from optimum_npu.models.vlm.visual_config import VisualModelConfig

PAD_SEGMENT = -1


@dataclass
class PreparedImage:
    """The inputs of one bucket call and how to undo the padding and reordering.

    ``pixel_values`` [bucket, patch_dim], ``positions`` [bucket, 2] int64 (h, w),
    ``full_segments`` / ``window_segments`` [bucket] int64 (-1 = padding);
    ``inverse`` [tokens] reorders the merged outputs back to row-major order (None: identity);
    ``pos_indices`` [bucket, 4] int64 / ``pos_weights`` [bucket, 4]: Qwen3-VL's bilinear taps into
    the learned position grid (padding: row 0, weight 0).
    """

    pixel_values: torch.Tensor
    positions: torch.Tensor
    full_segments: torch.Tensor
    window_segments: torch.Tensor | None
    num_patches: int
    bucket: int
    inverse: torch.Tensor | None
    pos_indices: torch.Tensor | None = None
    pos_weights: torch.Tensor | None = None

    def graph_inputs(self) -> dict[str, torch.Tensor]:
        inputs = {"pixel_values": self.pixel_values, "positions": self.positions,
                  "full_segments": self.full_segments}
        if self.window_segments is not None:
            inputs["window_segments"] = self.window_segments
        if self.pos_indices is not None:
            inputs["pos_indices"], inputs["pos_weights"] = self.pos_indices, self.pos_weights
        return inputs


def patch_positions(t: int, h: int, w: int, merge: int) -> torch.Tensor:
    """(h, w) of every patch in pixel_values order (merge blocks row by row, frames repeated). -> [t*h*w, 2]"""
    hpos = torch.arange(h).view(h // merge, merge, 1, 1).expand(-1, -1, w // merge, merge)
    wpos = torch.arange(w).view(1, 1, w // merge, merge).expand(h // merge, merge, -1, -1)
    hpos = hpos.permute(0, 2, 1, 3).reshape(-1)                       # [h*w] block-major
    wpos = wpos.permute(0, 2, 1, 3).reshape(-1)
    return torch.stack([hpos, wpos], dim=-1).repeat(t, 1)


def window_order(t: int, h: int, w: int, merge: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2.5-VL window reordering of one image, at merged-token granularity.

    Returns (``order`` [t*lh*lw]: the merged token placed at each position, as HF's
    ``get_window_index``; ``window_of`` [t*lh*lw]: the window id of each reordered token).
    Windows are ``window x window`` merged tokens, row by row per frame; edge windows are smaller.
    """
    lh, lw = h // merge, w // merge
    rows = torch.arange(lh).view(lh, 1).expand(lh, lw)
    cols = torch.arange(lw).view(1, lw).expand(lh, lw)
    per_row = -(-lw // window)
    per_frame = -(-lh // window) * per_row
    window_id = ((rows // window) * per_row + cols // window).reshape(-1)               # [lh*lw]
    window_id = (torch.arange(t).view(t, 1) * per_frame + window_id).reshape(-1)          # [t*lh*lw]
    order = torch.sort(window_id, stable=True).indices            # row-major inside each window
    return order, window_id[order]


def prepare_image(pixel_values: torch.Tensor, grid_thw: tuple[int, int, int], bucket: int,
                  model: VisualModelConfig, dtype: torch.dtype) -> PreparedImage:
    """Pads one image's patches [t*h*w, patch_dim] to ``bucket`` rows, with positions and segments."""
    t, h, w = grid_thw
    merge, unit = model.spatial_merge_size, model.merge_unit
    n = t * h * w
    positions = patch_positions(t, h, w, merge)                                          # [n, 2]
    full = torch.arange(t).repeat_interleave(h * w)                                      # [n] frame of each patch
    windows = inverse = None
    if model.kind == "qwen2_5_vl":
        order, window_of = window_order(t, h, w, merge, model.window_merged)
        rows = (order.view(-1, 1) * unit + torch.arange(unit)).reshape(-1)               # [n] patch order
        pixel_values, positions, full = pixel_values[rows], positions[rows], full[rows]
        windows = window_of.repeat_interleave(unit)                                      # [n]
        inverse = torch.argsort(order)
    pos_indices = pos_weights = None
    if model.num_position_embeddings:  # Qwen3-VL: HF's bilinear, align_corners=True resampling of the grid
        pos_indices, pos_weights = get_vision_interpolation_indices_and_weights(
            torch.tensor([[t, h, w]]), model.pos_grid_side, mode="bilinear", align_corners=True,
            spatial_merge_size=merge)                                                    # each [n, 4]
    pad = bucket - n

    def padded(x: torch.Tensor, value: int = 0) -> torch.Tensor:
        return torch.cat([x, x.new_full((pad, *x.shape[1:]), value)])

    return PreparedImage(
        pixel_values=padded(pixel_values.to(dtype)), positions=padded(positions),
        full_segments=padded(full, PAD_SEGMENT),
        window_segments=None if windows is None else padded(windows, PAD_SEGMENT),
        num_patches=n, bucket=bucket, inverse=inverse,
        pos_indices=None if pos_indices is None else padded(pos_indices),
        pos_weights=None if pos_weights is None else padded(pos_weights))   # fp32, as HF


def unpad_output(merged: torch.Tensor, image: PreparedImage, unit: int) -> torch.Tensor:
    """[bucket / unit, out_hidden] graph output -> [num_patches / unit, out_hidden] in row-major order."""
    tokens = merged[: image.num_patches // unit]
    return tokens if image.inverse is None else tokens[image.inverse]
