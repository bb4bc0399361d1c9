"""Host-side M-RoPE positions of a multimodal prompt, computed by the HF model class's own code.

Qwen-VL models give image tokens 3-D (temporal, height, width) rotary positions and text
tokens 1-D positions continuing after the image. The HF classes compute these in
``get_rope_index``, a pure function of the token ids, the image grids and the config; it
is called here on a small stand-in object, so the HF module itself never runs.
"""

from __future__ import annotations

import torch
from transformers import PretrainedConfig

TEXT, IMAGE, VIDEO = 0, 1, 2


class RopeIndex:
    """``RopeIndex(hf_model_class, config)(input_ids, ...) -> (positions [3, B, L], deltas [B])``."""

    def __init__(self, base_model_class: type, config: PretrainedConfig):
        methods = {name: getattr(base_model_class, name)
                   for name in ("get_rope_index", "get_vision_position_ids") if hasattr(base_model_class, name)}
        self._impl = type("RopeIndexImpl", (), methods)()
        self._impl.config = config
        self.image_token_id = config.image_token_id
        self.video_token_id = config.video_token_id

    def token_types(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Text 0, image 1, video 2, as the processor's ``mm_token_type_ids``."""
        return ((input_ids == self.image_token_id) * IMAGE + (input_ids == self.video_token_id) * VIDEO).int()

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 image_grid_thw: torch.Tensor | None = None, video_grid_thw: torch.Tensor | None = None,
                 mm_token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if mm_token_type_ids is None:
            mm_token_type_ids = self.token_types(input_ids)
        if image_grid_thw is None and video_grid_thw is None:  # text only: positions count the real tokens
            mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
            positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
            return positions.unsqueeze(0).expand(3, -1, -1), torch.zeros(input_ids.shape[0], dtype=torch.long)
        positions, deltas = self._impl.get_rope_index(
            input_ids, mm_token_type_ids=mm_token_type_ids, image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw, attention_mask=attention_mask)
        return positions, deltas.view(-1).long()
