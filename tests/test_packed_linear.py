"""Linear weights packed at load (``device/kernels/packed_linear.py``): which weights are packed, for which graphs,
and that the packed products give ``F.linear``'s values up to rounding, on every row count and with padding rows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from optimum_npu.device.kernels import packed_linear
from optimum_npu.device.kernels.linear import linear_kernel
from optimum_npu.device.kernels.packed_linear import (PACKED_LINEAR_ENV, LinearPacking, pack_matrix,
                                                      packing_enabled)
from optimum_npu.device.kernels.real_rows import real_rows
from optimum_npu.device.lockstep_kernels import (PackedShards, column_linear, reduced_row_linear, row_linear,
                                                 sum_over_ranks)
from optimum_npu.schema import Graph, Node, TensorSpec


SIDE = 128   # [128, 128] fp32 = 64 KiB: PACK_MIN_BYTES


def _linear(name: str, x: str, weight: str, rows: int, out: int = SIDE) -> Node:
    return Node(name, "aten.linear.default", [{"ref": x}, {"ref": weight}], {},
                {"shape": [rows, out], "dtype": "float32"})


def _graph(name: str, rows: int, extra: tuple[Node, ...] = (), dtype: str = "float32") -> Graph:
    inputs = (TensorSpec("x", "input", (rows, SIDE), "float32"),
              TensorSpec("w_up", "weight", (SIDE, SIDE), dtype, source="up.weight"),
              TensorSpec("w_head", "weight", (SIDE, SIDE), "float32", source="head.weight"),
              TensorSpec("ids", "input", (rows,), "int64"))
    nodes = (_linear("up", "x", "w_up", rows), _linear("head", "up", "w_head", rows), *extra)
    return Graph(name, inputs, nodes, (nodes[-1].name,))


def _spec(graph: Graph, name: str) -> TensorSpec:
    return next(spec for spec in graph.inputs if spec.name == name)


def test_packing_chooses_the_weights_read_only_by_linears():
    graphs = {"prefill": _graph("prefill", 16), "decode_1": _graph("decode_1", 1)}
    packing = LinearPacking(graphs, room=None)
    assert packing.sources == {"up.weight", "head.weight"}
    for graph in graphs.values():
        assert packing.chosen(_spec(graph, "w_up")) and packing.chosen(_spec(graph, "w_head"))
        assert not packing.chosen(_spec(graph, "x"))
    assert packing.nbytes == 2 * SIDE * SIDE * 4            # one copy per source, whatever the graphs


def test_packing_refuses_weights_read_otherwise_or_in_another_dtype():
    embedding = Node("embed", "aten.embedding.default", [{"ref": "w_head"}, {"ref": "ids"}], {},
                     {"shape": [16, SIDE], "dtype": "float32"})
    decode = _graph("decode", 4)
    tied = LinearPacking({"prefill": _graph("prefill", 16, (embedding,)), "decode": decode}, room=None)
    assert not tied.chosen(_spec(decode, "w_head"))              # read by an embedding in another graph
    assert tied.chosen(_spec(decode, "w_up")) and tied.sources == {"up.weight"}
    prefill = _graph("prefill", 16, dtype="bfloat16")
    bf16 = LinearPacking({"prefill": prefill}, room=None)
    assert not bf16.chosen(_spec(prefill, "w_up")) and bf16.sources == {"head.weight"}


def test_packing_gives_up_when_the_copies_do_not_fit_and_skips_small_weights(monkeypatch):
    graphs = {"prefill": _graph("prefill", 16)}
    both = 2 * SIDE * SIDE * 4
    assert LinearPacking(graphs, room=both).sources == {"up.weight", "head.weight"}
    assert not LinearPacking(graphs, room=both - 1).sources
    assert not LinearPacking(graphs, room=both, copies=2).sources   # two ranks' copies
    monkeypatch.setattr(packed_linear, "PACK_MIN_BYTES", SIDE * SIDE * 4 + 1)
    assert not LinearPacking(graphs, room=None).sources


def test_packing_switch(monkeypatch):
    monkeypatch.setenv(PACKED_LINEAR_ENV, "off")
    assert not packing_enabled()
    monkeypatch.setenv(PACKED_LINEAR_ENV, "1")
    assert packing_enabled() == torch.backends.mkldnn.is_available()


def test_pack_binds_one_copy_per_distinct_tensor():
    graph = _graph("prefill", 16)
    packing = LinearPacking({"prefill": graph}, room=None)
    shared = torch.randn(SIDE, SIDE)
    packing.pack({"up.weight": shared, "head.weight": shared})
    up, head, x = (_spec(graph, name) for name in ("w_up", "w_head", "x"))
    assert packing.bound(up) is packing.bound(head)
    assert packing.bound(up).is_mkldnn and packing.bound(x) is None


@pytest.mark.parametrize("rows", [1, 3, 4, 16, 86])
def test_packed_linear_matches_f_linear(rows):
    gen = torch.Generator().manual_seed(rows)
    x, weight, bias = torch.randn(rows, 1, 96, generator=gen), torch.randn(40, 96, generator=gen) / 96 ** 0.5, \
        torch.randn(40)
    packed = pack_matrix(weight)
    for b in (None, bias):
        got = linear_kernel(x, packed, b)
        assert got.shape == (rows, 1, 40) and got.is_contiguous() and not got.is_mkldnn
        torch.testing.assert_close(got, F.linear(x, weight, b), rtol=0, atol=1e-5)


def test_packed_linear_computes_only_the_real_rows_and_refuses_like_f_linear():
    x, weight = torch.randn(1, 16, 32), torch.randn(24, 32) / 32 ** 0.5
    with real_rows((1, 16), 5):
        got = linear_kernel(x, pack_matrix(weight))
    torch.testing.assert_close(got[0, :5], F.linear(x, weight)[0, :5], rtol=0, atol=1e-5)
    assert torch.equal(got[0, 5:], torch.zeros(11, 24))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        linear_kernel(torch.randn(2, 31), pack_matrix(weight))


def test_lockstep_linears_over_packed_shards_match_the_stacked_weights():
    n, gen = 4, torch.Generator().manual_seed(0)
    stack, bias = torch.randn(n, 12, 32, generator=gen) / 32 ** 0.5, torch.randn(n, 12, generator=gen)
    shared_x, stacked_x = torch.randn(3, 1, 32, generator=gen), torch.randn(n, 3, 1, 32, generator=gen)
    for b in (None, bias):
        torch.testing.assert_close(column_linear(linear_kernel, shared_x, PackedShards(stack), b),
                                   column_linear(linear_kernel, shared_x, stack, b), rtol=0, atol=1e-5)
        torch.testing.assert_close(row_linear(stacked_x, PackedShards(stack), b), row_linear(stacked_x, stack, b),
                                   rtol=0, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 4, 16])
def test_a_row_parallel_linear_reduced_with_its_all_reduce_is_the_sum_of_the_ranks_products(rows):
    n, gen = 4, torch.Generator().manual_seed(rows)
    stack, x = torch.randn(n, 12, 32, generator=gen) / 32 ** 0.5, torch.randn(n, rows, 1, 32, generator=gen)
    want = sum_over_ranks(row_linear(x, stack, None))                                    # [rows, 1, 12]
    assert torch.equal(reduced_row_linear(linear_kernel, x, stack), want)                 # plain stack: the same ops
    got = reduced_row_linear(linear_kernel, x, PackedShards(stack))      # one product over the joined shards
    assert got.shape == want.shape                                        # (one row: the plain stack's products)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
