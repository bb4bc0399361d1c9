"""Checking a compile-cache hit: is the cached artifact the compile of *this* model?

The cache key hashes the HF model, but the entry behind the key is untrusted data: whoever can
write a shared cache can swap an entry's weights and re-sign its manifest, leaving ``entry.json``
intact. Each family's hit check (e.g. ``models/decoder/cache_key.py``) therefore compares the
artifact with what its compile would write for the model being compiled, before anything of it is
used, with the helpers here:

- ``verify_artifact`` (the checks of a normal load);
- architecture, family, compile knobs, target spec and graph list of ``npu_config.json``;
- ``config.json`` and ``generation_config.json`` (as the key hashes them), tokenizer files (sha256);
- every weight any graph names, on every rank: equal (same dtype, shape and bytes) to the HF
  model's tensor cast to the compile dtype, cut as ``tensor_parallel.shard_weights`` cuts it
  (so the ranks reassemble to the HF tensor, vocabulary padding zero). A weight with no HF
  tensor of that name is a mismatch.

Any difference raises ``CacheMismatchError``; ``compile_with_cache`` then drops the entry and
recompiles. The graphs themselves are checked by graph validation at load, not recomputed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from transformers import AutoConfig, GenerationConfig

from optimum_npu.compile.artifact import ArtifactError, read_graph, read_manifest
from optimum_npu.compile.tensor_parallel import Cut, cut_shard, weight_cut
from optimum_npu.compile.tensor_parallel_plan import TensorParallelPlan
from optimum_npu.compile.weights import read_aliases
from optimum_npu.hub.canonical import _public_dict, canonical_json
from optimum_npu.schema import weights_file


class CacheMismatchError(ArtifactError):
    """A compile-cache entry is not the compile of the model and configuration asked for."""


def check_same(found: Any, expected: Any, what: str) -> None:
    if canonical_json(found) != canonical_json(expected):
        raise CacheMismatchError(f"its {what} differs from the model being compiled")


def check_stored_documents(target: Path, stored: dict, *, hf_model: Any, architecture: str, family: str,
                           inputs: dict[str, Any], files: tuple[str, ...], knobs: dict[str, Any] | None = None) -> None:
    """The parts of a hit every family that compiles one HF model checks alike: architecture and family,
    the stored knobs (``knobs``: the stored document's projection on the keyed knobs; default its keys
    of the key's ``npu_config``) and spec as keyed, ``config.json``, ``generation_config.json`` and the
    shipped files."""
    check_same([stored.get("architecture"), stored.get("family")], [architecture, family], "architecture")
    knobs = {k: stored.get(k) for k in inputs["npu_config"]} if knobs is None else knobs
    check_same(knobs, inputs["npu_config"], "compile configuration")
    check_same(stored.get("npu_spec"), inputs["npu_spec"], "NPU spec")
    check_same(_public_dict(AutoConfig.from_pretrained(target)), inputs["config"], "config.json")
    generation = inputs["generation"] or _public_dict(GenerationConfig.from_model_config(hf_model.config))
    check_same(_public_dict(GenerationConfig.from_pretrained(target)), generation, "generation_config.json")
    listed = read_manifest(target)
    check_same({n: listed[n]["sha256"] for n in files if n in listed}, inputs["files"], "shipped files")


def _reference(hf_model: Any, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    tensors = {**dict(hf_model.named_buffers()), **hf_model.state_dict()}
    return {name: t.detach().to(dtype) if t.is_floating_point() else t.detach() for name, t in tensors.items()}


def _expected(source: str, full: torch.Tensor, stored: torch.Tensor, plan: TensorParallelPlan,
              rank: int) -> torch.Tensor | None:
    """What ``shard_weights`` puts on ``rank`` for ``source`` (None when no cut of ``full`` fits)."""
    size = plan.size
    vocab_part = -(-full.shape[0] // size) if full.dim() else 0
    cut = weight_cut(plan.split_of(source), source, tuple(full.shape)) if size > 1 else Cut("replicate")
    if source.endswith(":vocab_shard"):
        cut = Cut("vocab")
    if cut.style in ("colwise", "rowwise", "rowwise_bias"):
        part = sum(cut.parts) // size if cut.style == "colwise" else full.shape[cut.dim] // size
        return cut_shard(full, cut.style, cut.dim, part, rank, size, cut.parts)
    if cut.style == "replicate" and tuple(stored.shape) == tuple(full.shape):
        return full
    if size > 1 and full.dim() >= 1 and tuple(stored.shape) == (vocab_part, *full.shape[1:]):
        return cut_shard(full, "vocab", 0, vocab_part, rank, size)  # the logits projection (untied or tied)
    return None


def check_weights(target: Path, graphs: list[str], hf_model: Any, dtype: torch.dtype,
                  plan: TensorParallelPlan) -> None:
    """Every weight the ``graphs`` name equals, on every rank, its cut of the HF model's tensor."""
    inputs = [spec for name in graphs for spec in read_graph(target, name, prove_shapes=False).inputs]
    sources = sorted({spec.source for spec in inputs if spec.kind == "weight"})
    reference = _reference(hf_model, dtype)
    for rank in range(plan.size):
        path = target / weights_file(rank, plan.size)
        with safe_open(str(path), framework="pt") as handle:
            names = set(handle.keys())
            aliases = read_aliases(handle.metadata(), names, path)
            for source in sources:
                full = reference.get(str(source).removesuffix(":vocab_shard"))
                stored_name = aliases.get(source, source)
                if full is None or stored_name not in names:
                    raise CacheMismatchError(f"weight {source!r} of its graphs is not a weight of the model being "
                                             f"compiled (or is missing from {path.name})")
                stored = handle.get_tensor(stored_name)
                expected = _expected(source, full, stored, plan, rank)
                if expected is None or stored.dtype != expected.dtype or not torch.equal(stored, expected):
                    raise CacheMismatchError(f"weight {source!r} in {path.name} differs from the model being "
                                             "compiled")


__all__ = ["CacheMismatchError", "check_same", "check_stored_documents", "check_weights"]
