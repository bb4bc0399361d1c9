"""Lockstep rules: how each node of a rank graph runs over rank-stacked values (see ``lockstep``).

A stacked value is ``[N, *rank_shape]``; slice r is rank r's value. ``translate`` emits the
steps of one node and returns the slot of its value. Nodes whose operands are all shared run
as they are (their value is the same on every rank). Otherwise the node's rule either maps
it to the same operator with the rank dimension accounted for (broadcast, shifted dimension
arguments, prepended sizes) or to an operator that does the N ranks' work at once:

- linear, column-parallel (shared input, stacked weight [N, out, in]): one linear over the
  weight viewed [N * out, in] (the ranks' shards, concatenated), its features split back per rank;
  row-parallel (stacked input): one batched matmul;
- paged / sliding-window attention: one call with the ranks folded into the heads (rank r's heads
  are heads r * H_r ... of the call) over the ranks' caches viewed as one cache with N times the heads;
- all-reduce: rank 0's operand plus the others', in rank order (as ``InProcessGroup``); all-gather:
  the ranks' operands concatenated in rank order. Both give shared values. An all-reduce that is the only
  reader of a row-parallel linear (no bias) runs with it as one product over the joined shards
  (``reduced_row_linear``).

Anything else with a stacked operand (expert-parallel collectives, quantized linears, convolutions,
multi-output ops) raises ``LockstepUnsupported``: the engine runs that graph rank by rank.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from optimum_npu.device.lockstep_kernels import (cat_over_ranks, column_linear, expanded, fold_cache, fold_heads,
                                                 insert_dims, reduced_row_linear, row_linear, sum_over_ranks,
                                                 unfold_heads)
from optimum_npu.device.executor import HostNode
from optimum_npu.device.lockstep_steps import Arguments, Call, Ref
from optimum_npu.schema import ALL_GATHER, ALL_REDUCE, Node
from optimum_npu.schema_ops import ALLOWED_OPS

if TYPE_CHECKING:
    from optimum_npu.device.lockstep import LockstepProgram

#: Element-wise ops (broadcasting): the rank dimension leads every stacked operand.
POINTWISE = {
    "aten.add.Tensor", "aten.sub.Tensor", "aten.mul.Tensor", "aten.div.Tensor", "aten.neg.default",
    "aten.rsqrt.default", "aten.pow.Tensor_Scalar", "aten.relu.default", "aten.sigmoid.default",
    "aten.silu.default", "aten.gelu.default", "aten.tanh.default", "aten.sin.default", "aten.cos.default",
    "aten.exp.default", "aten.log.default", "aten.abs.default", "aten.clamp.default", "aten.min.other",
    "aten.where.self", "aten.where.ScalarOther", "aten.ne.Scalar", "aten.eq.Scalar", "aten.gt.Scalar",
    "aten.ge.Scalar", "aten.lt.Scalar", "aten.le.Tensor", "aten.to.dtype", "aten.to.device",
    "aten.to.dtype_layout", "aten._to_copy.default", "aten.type_as.default", "aten.alias.default",
    "aten.contiguous.default", "aten.zeros_like.default", "aten.full_like.default", "aten.add_.Tensor",
    "aten.copy_.default",
    # ops over the trailing dimensions only (a shared weight / normalized shape / padding)
    "aten.layer_norm.default", "aten.pad.default",
}
#: Ops whose ``self`` is written in place: it must be stacked when anything is.
IN_PLACE = {"aten.add_.Tensor", "aten.copy_.default"}
#: Dimension arguments (name, default) of single-output ops that otherwise act per slice.
DIM_ARGS = {
    "aten.cat.default": (("dim", 0),), "aten.concat.default": (("dim", 0),), "aten.stack.default": (("dim", 0),),
    "aten.slice.Tensor": (("dim", 0),), "aten.select.int": (("dim", None),),
    "aten.unsqueeze.default": (("dim", None),), "aten.squeeze.dim": (("dim", None),),
    "aten.softmax.int": (("dim", None),), "aten.cumsum.default": (("dim", None),),
    "aten.transpose.int": (("dim0", None), ("dim1", None)), "aten.mean.dim": (("dim", None),),
    "aten.sum.dim_IntList": (("dim", None),), "aten.flatten.using_ints": (("start_dim", 0), ("end_dim", -1)),
}
#: Ops taking a list of tensors (shared members are broadcast over the ranks first).
LIST_OPS = {"aten.cat.default", "aten.concat.default", "aten.stack.default"}
#: Size-list arguments: the rank dimension is prepended (views become reshapes: a stacked value may be strided).
SIZE_ARGS = {"aten.view.default": "size", "aten.reshape.default": "shape", "aten.expand.default": "size"}
#: Attention kernels -> (per-rank head dimension of each head-split argument, cache arguments). The ranks fold
#: into the heads: rank r's heads become heads r * H_r ... (r + 1) * H_r - 1 of one call over the ranks' caches,
#: which ``RankStack`` lays out [rows, N, heads_r, ...] so that the fold is a view; indices are shared.
ATTENTION = {
    "npu.paged_attention.default": ({"query": 2, "key": 2, "value": 2, "position_bias": 1, "sinks": 0},
                                    ("k_cache", "v_cache", "k_scale", "v_scale")),
    "npu.sliding_window_attention.default": ({"query": 2, "key": 2, "value": 2, "sinks": 0},
                                             ("k_ring", "v_ring", "k_scale", "v_scale")),
}


def translate(b: LockstepProgram, node: Node, a: Arguments) -> int:
    """Emits ``node``'s steps; returns the slot holding its value."""
    refs = a.tensors()
    if node.op in (ALL_REDUCE, ALL_GATHER):
        return _collective(b, node, a)
    if not any(b.stacked[r] for r in refs):
        return b.emit(b.op(), a.args, a.kwargs, stacked=False, ndim=b.out_ndim())
    if node.op in ATTENTION:
        return _attention(b, node, a)
    if any(b.source[r] for r in refs):
        raise b.refuse("a device-resident state tensor is read outside an attention kernel")
    if node.op == "aten.linear.default":
        return _linear(b, a)
    if node.op in POINTWISE:
        return _pointwise(b, node, a)
    if node.op in DIM_ARGS or node.op in SIZE_ARGS or node.op == "aten.permute.default":
        return _shaped(b, node, a)
    if node.op == "aten.matmul.default":
        return _matmul(b, a)
    if node.op == "aten.index.Tensor":
        return _index(b, a)
    if node.op == "aten.embedding.default":
        return _embedding(b, a)
    raise b.refuse("no lockstep rule for this operator with per-rank operands")


def translate_host(b: LockstepProgram, host: HostNode) -> int:
    """Emits a host-fused step (``host_fusion``: RMS norm, rotary embedding): element-wise over the leading
    dimensions, so stacked operands are right-aligned to the output's rank like a pointwise op's."""
    args = [b.ref(_name) if isinstance(arg, dict) and isinstance(_name := arg.get("ref"), str) else arg
            for arg in host.args]
    if not any(_stacked(b, arg) for arg in args):
        return b.emit(host.fn, args, stacked=False, ndim=b.out_ndim())
    ndim = b.out_ndim()
    if ndim is None or any(type(arg) is Ref and b.source[arg] for arg in args):
        raise b.refuse("a fused host step without a static shape, or reading a state tensor")
    return b.emit(host.fn, [_align(b, arg, ndim) if _stacked(b, arg) else arg for arg in args], stacked=True,
                  ndim=ndim)


def _stacked(b: LockstepProgram, ref) -> bool:
    return type(ref) is Ref and b.stacked[ref]


def _align(b: LockstepProgram, ref: Ref, ndim: int) -> Ref:
    """A stacked value [N, *s] viewed [N, 1, ..., *s] with ``ndim`` dims after N (right-aligned broadcasting)."""
    have = b.ndims[ref]
    if have is None:
        raise b.refuse("a per-rank operand has no static shape")
    if have == ndim:
        return ref
    return b.emit(insert_dims, [ref, ndim - have], stacked=True, ndim=ndim)


def _broadcast(b: LockstepProgram, ref: Ref) -> Ref:
    """A shared value repeated over the ranks (a view)."""
    return b.emit(expanded, [ref, b.size], stacked=True, ndim=b.ndims[ref])


def _pointwise(b: LockstepProgram, node: Node, a: Arguments) -> int:
    ndim = b.out_ndim()
    if ndim is None:
        raise b.refuse("the output has no static shape")
    if node.op in IN_PLACE and not _stacked(b, a.get("self")):
        raise b.refuse("an in-place op would write per-rank values into a shared tensor")
    if node.op == "aten.layer_norm.default" and (_stacked(b, a.get("weight")) or _stacked(b, a.get("bias"))):
        raise b.refuse("a per-rank normalisation weight")
    a.args = [_align(b, x, ndim) if _stacked(b, x) else x for x in a.args]
    a.kwargs = {k: _align(b, x, ndim) if _stacked(b, x) else x for k, x in a.kwargs.items()}
    return b.emit(b.op(), a.args, a.kwargs, stacked=True, ndim=ndim)


def _shift(dim):
    """A per-rank dimension index (or list of them) as an index of the stacked value; None when not static."""
    if isinstance(dim, list):
        shifted = [_shift(d) for d in dim]
        return None if None in shifted else shifted
    if type(dim) is not int:
        return None
    return dim + 1 if dim >= 0 else dim


def _shaped(b: LockstepProgram, node: Node, a: Arguments) -> int:
    ndim = b.out_ndim()
    if node.op in LIST_OPS:
        a.set("tensors", [x if _stacked(b, x) else _broadcast(b, x) for x in a.get("tensors")])
    first = a.get("tensors")[0] if node.op in LIST_OPS else a.get("self")
    for name, default in DIM_ARGS.get(node.op, ()):
        dim = _shift(a.get(name, default))
        if dim is None:
            raise b.refuse(f"argument {name!r} is not a static dimension")
        a.set(name, dim)
    if node.op == "aten.permute.default":
        rank_ndim = b.ndims[first]
        if rank_ndim is None:
            raise b.refuse("a per-rank operand has no static shape")
        a.set("dims", [0] + [d % rank_ndim + 1 for d in a.get("dims")])
    if node.op in SIZE_ARGS:
        size = a.get(SIZE_ARGS[node.op])
        if ndim is None or not all(isinstance(d, int) for d in size):
            raise b.refuse("the size is not static")
        if node.op != "aten.expand.default":
            return b.emit(b.op("aten.reshape.default"), [first, [b.size, *size]], stacked=True, ndim=ndim)
        a.set("self", _align(b, first, ndim))
        a.set("size", [-1, *size])
    return b.emit(b.op(), a.args, a.kwargs, stacked=True, ndim=ndim)


def _linear(b: LockstepProgram, a: Arguments) -> int:
    x, weight, bias = a.get("input"), a.get("weight"), a.get("bias")
    ndim = b.out_ndim()
    if not _stacked(b, weight):
        if _stacked(b, bias):
            raise b.refuse("a per-rank bias on a shared weight")
        return b.emit(b.op(), a.args, a.kwargs, stacked=True, ndim=ndim)   # stacked input, shared weight
    if _stacked(b, x):
        return b.emit(row_linear, [x, weight, bias], stacked=True, ndim=ndim)
    return b.emit(column_linear, [b.op(), x, weight, bias], stacked=True, ndim=ndim)


def _matmul(b: LockstepProgram, a: Arguments) -> int:
    ndim = b.out_ndim()
    operands = [a.get("self"), a.get("other")]
    if ndim is None or any(type(x) is Ref and (b.ndims[x] or 0) < 2 for x in operands):
        raise b.refuse("matmul of vectors or of operands without static shapes")
    operands = [_align(b, x, ndim) if _stacked(b, x) else x for x in operands]
    return b.emit(b.op(), operands, stacked=True, ndim=ndim)


def _index(b: LockstepProgram, a: Arguments) -> int:
    source, indices = a.get("self"), list(a.get("indices"))
    given = [i for i, x in enumerate(indices) if x is not None]
    if not _stacked(b, source) or any(_stacked(b, x) for x in indices) or \
            (given and given[-1] - given[0] + 1 != len(given)):
        raise b.refuse("indexing with per-rank or non-adjacent indices")
    return b.emit(b.op(), [source, [None, *indices]], stacked=True, ndim=b.out_ndim())


def _embedding(b: LockstepProgram, a: Arguments) -> int:
    weight, indices = a.get("weight"), a.get("indices")
    if _stacked(b, weight) and not _stacked(b, indices):
        return b.emit(b.op("aten.index.Tensor"), [weight, [None, indices]], stacked=True, ndim=b.out_ndim())
    if not _stacked(b, weight):
        return b.emit(b.op(), a.args, a.kwargs, stacked=True, ndim=b.out_ndim())
    raise b.refuse("an embedding of per-rank indices into a per-rank table")


def _collective(b: LockstepProgram, node: Node, a: Arguments) -> int:
    x = a.get("x")
    if a.get("group_size") != b.size:
        raise b.refuse(f"a collective over {a.get('group_size')} devices in a group of {b.size}")
    if node.op == ALL_REDUCE and _stacked(b, x):
        fused = _reduce_row_linear(b, x, node)
        if fused is not None:
            return fused
    if not _stacked(b, x):
        x = _broadcast(b, x)
    if node.op == ALL_REDUCE:
        return b.emit(sum_over_ranks, [x], stacked=False, ndim=b.out_ndim())
    return b.emit(cat_over_ranks, [x, a.get("dim")], stacked=False, ndim=b.out_ndim())


def _reduce_row_linear(b: LockstepProgram, x: Ref, reduce: Node) -> Ref | None:
    """Rewrites the row-parallel linear that produced ``x`` into one step with the all-reduce ``reduce`` now
    read: when ``reduce`` reads the linear's own value, nothing else reads it and it has no bias. None (nothing
    rewritten) otherwise."""
    index = next((i for i in range(len(b.steps) - 1, -1, -1) if b.steps[i].slot == x), None)
    step = b.steps[index] if index is not None else None
    if step is None or step.fn is not row_linear or step.args[2] is not None or b.readers.get(step.node) != 1 or \
            not reduce.args or reduce.args[0] != {"ref": step.node}:
        return None
    b.steps[index] = Call(reduced_row_linear, [b.op("aten.linear.default"), step.args[0], step.args[1]], {},
                          step.slot, step.node)
    b.stacked[step.slot] = False
    return x


def _attention(b: LockstepProgram, node: Node, a: Arguments) -> int:
    head_args, cache_args = ATTENTION[node.op]
    caches = [a.get(name) for name in cache_args]
    if any(x is not None and not b.source[x] for x in caches) or \
            any(_stacked(b, a.get(name)) for name in ALLOWED_OPS[node.op] if name not in (*head_args, *cache_args)):
        raise b.refuse("the caches are not the ranks' state, or positions / cache indices differ per rank")
    for name, dim in head_args.items():
        x = a.get(name)
        if x is not None:
            a.set(name, b.emit(fold_heads, [x if _stacked(b, x) else _broadcast(b, x), dim], stacked=False,
                               ndim=b.ndims[x]))
    for name, x in zip(cache_args, caches):
        if x is not None:
            a.set(name, b.emit(fold_cache, [x], stacked=False, ndim=b.ndims[x]))
    out = b.emit(b.op(), a.args, a.kwargs, stacked=False, ndim=b.out_ndim())
    return b.emit(unfold_heads, [out, b.size], stacked=True, ndim=b.out_ndim())
