"""Host-speed paths of the device (issue 19) keep the numbers: the weight-stationary linear kernel and the
padding rows a decoder call leaves uncomputed change logits by rounding only (<= 1e-5) and no greedy token.
The simulated figures they must not move are pinned by ``test_sim_figures.py``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from optimum_npu import NPUModelForCausalLM
from optimum_npu.device import engine as engine_module
from optimum_npu.device.kernels import linear, packed_linear
from optimum_npu.device.kernels.linear import linear_kernel
from optimum_npu.device.kernels.packed_linear import PACKED_LINEAR_ENV
from optimum_npu.device.kernels.real_rows import real_prefix, real_rows, skips_padding
from optimum_npu.schema import Graph, Node, TensorSpec

PROMPTS = ["hello there", "the simulated device runs graphs", "a"]


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 8, 9, 16])
@pytest.mark.parametrize("inner", [24, 2048])
def test_linear_kernel_matches_f_linear(rows, inner, monkeypatch):
    monkeypatch.setattr(linear, "STATIONARY_MIN_BYTES", 0)   # the weight-stationary product on these small weights
    gen = torch.Generator().manual_seed(rows)
    x, weight, bias = (torch.randn(rows, 1, inner, generator=gen), torch.randn(40, inner, generator=gen),
                       torch.randn(40, generator=gen))
    for b in (None, bias):
        got, want = linear_kernel(x, weight, b), F.linear(x, weight, b)
        assert got.shape == want.shape and got.is_contiguous()
        if rows == 1 or rows > 8 or inner >= linear.STATIONARY_MAX_INNER:
            assert torch.equal(got, want)   # F.linear itself outside the weight-stationary range
        else:
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 4])
def test_small_plain_weights_keep_f_linear_exactly(rows):
    x, weight = torch.randn(rows, 1, 256), torch.randn(256, 256)   # 256 KiB: below both size bars
    assert torch.equal(linear_kernel(x, weight), F.linear(x, weight))


def test_linear_kernel_keeps_other_dtypes_exact():
    x, weight = torch.randn(4, 1, 32).bfloat16(), torch.randn(16, 32).bfloat16()
    assert torch.equal(linear_kernel(x, weight), F.linear(x, weight))


def test_linear_kernel_computes_only_real_rows_of_the_grid():
    x, weight = torch.randn(1, 16, 32), torch.randn(24, 32)
    with real_rows((1, 16), 5):
        got = linear_kernel(x, weight)
        other_shape = linear_kernel(x[0], weight)               # leading dims [16] are not the grid: every row
    torch.testing.assert_close(got[0, :5], F.linear(x, weight)[0, :5], rtol=0, atol=1e-5)
    assert torch.equal(got[0, 5:], torch.zeros(11, 24))
    assert torch.equal(other_shape, F.linear(x[0], weight))
    assert torch.equal(linear_kernel(x, weight), F.linear(x, weight))   # outside the block: every row


@pytest.mark.parametrize("positions, expected", [
    ([[4, 5, 6, -1, -1]], 3),           # a prefill chunk, padding after the tokens
    ([[7], [9], [-1], [-1]], 2),       # a decode batch with two padding rows
    ([[7], [9]], None),                 # no padding: nothing to skip
    ([[-1, 4, 5]], None),               # padding before a real token: not a prefix
    ([[7], [-1], [9]], None),
])
def test_real_prefix(positions, expected):
    assert real_prefix(torch.tensor(positions)) == expected


def test_graphs_with_expert_routing_compute_their_padding():
    spec = TensorSpec("x", "input", (2, 4), "float32")
    node = Node("moe", "npu.moe.default", [{"ref": "x"}], {}, {"shape": [2, 4], "dtype": "float32"})
    assert not skips_padding(Graph("g", (spec,), (node,), ("moe",)))
    linear_node = Node("lin", "aten.linear.default", [{"ref": "x"}, {"ref": "x"}], {}, {})
    assert skips_padding(Graph("g", (spec,), (linear_node,), ("lin",)))
    assert not skips_padding(Graph("g", (spec,), (linear_node,), ("lin", "x")))   # a second output may read padding


def _generate(model, tokenizer):
    inputs = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    out = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False, output_logits=True,
                         return_dict_in_generate=True)
    return out.sequences, torch.stack(out.logits)


def _load(artifact, monkeypatch, packed: bool) -> NPUModelForCausalLM:
    """The artifact loaded with every eligible linear weight packed (the tiny model's matrices are below the size
    bar, so it is lowered), or with packing off."""
    with monkeypatch.context() as patch:
        if packed:
            patch.setattr(packed_linear, "PACK_MIN_BYTES", 0)
        else:
            patch.setenv(PACKED_LINEAR_ENV, "0")
        return NPUModelForCausalLM.from_pretrained(artifact)


def test_generate_with_the_fast_paths_matches_the_plain_execution(llama, tokenizer, monkeypatch):
    fast, plain = _load(llama.artifact, monkeypatch, True), _load(llama.artifact, monkeypatch, False)
    try:
        engine = fast._runtime.engine
        assert all(engine.skips_padding.values())
        bound = {name: [t.is_mkldnn for t in engine.ranks[0].bindings[name] if isinstance(t, torch.Tensor)]
                 for name in ("prefill", "decoder_batch_1", "decoder_batch_4")}
        assert all(any(packed) for packed in bound.values())            # every bucket reads packed weights
        assert not any(t.is_mkldnn for b in plain._runtime.engine.ranks[0].bindings.values() for t in b
                       if isinstance(t, torch.Tensor))
        skipped = []
        plain_rows = engine_module.real_rows

        def counting_rows(grid, count):
            skipped.append((grid, count))
            return plain_rows(grid, count)

        with monkeypatch.context() as patch:
            patch.setattr(engine_module, "real_rows", counting_rows)
            patch.setattr(linear, "STATIONARY_MIN_BYTES", 0)
            fast_tokens, fast_logits = _generate(fast, tokenizer)
        assert any(grid[0] == 1 for grid, _ in skipped) and any(grid == (4, 1) for grid, _ in skipped)  # prefill, decode
        plain_engine = plain._runtime.engine
        monkeypatch.setattr(linear, "FAST_PRODUCTS", False)                   # F.linear everywhere, as before
        monkeypatch.setattr(plain_engine, "skips_padding", dict.fromkeys(plain_engine.skips_padding, False))
        plain_tokens, plain_logits = _generate(plain, tokenizer)
    finally:
        fast.release()
        plain.release()
    assert torch.equal(fast_tokens, plain_tokens)
    torch.testing.assert_close(fast_logits, plain_logits, rtol=0, atol=1e-5)
