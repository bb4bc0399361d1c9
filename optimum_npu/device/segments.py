"""A graph cut at its collective nodes, so that the ranks of a tensor-parallel group can run
in lockstep in one thread: every rank runs segment k, then the group performs the
collective with real arithmetic, then every rank runs segment k+1.

This keeps the in-process simulation of N devices close to the cost of one (no threads,
no barriers): each rank does 1/N of the arithmetic between collectives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from optimum_npu.device.executor import GraphExecutionError, NodeProgram, value_dtypes
from optimum_npu.device.kernels import COLLECTIVE_OPS, KERNELS
from optimum_npu.schema import Graph, Node, decode_arg, iter_refs


@dataclass
class Segment:
    """Nodes between two collectives: reads ``inputs`` from the environment, writes ``outputs``."""

    program: NodeProgram
    inputs: list[str]
    outputs: list[str]


class SegmentedProgram:
    """``graph`` as alternating compute segments and collective nodes.

    ``run_group(programs, envs, collective)`` executes it for every rank: ``envs[r]`` maps the
    graph's input names to rank r's tensors; ``collective(node, per_rank_args)`` returns each
    rank's result of a collective node.
    """

    def __init__(self, graph: Graph, kernels: dict[str, Callable] | None = None):
        kernels = KERNELS if kernels is None else kernels
        self.graph = graph
        self.steps: list[Segment | Node] = []
        pieces: list[list[Node] | Node] = [[]]
        for node in graph.nodes:
            if node.op in COLLECTIVE_OPS:
                pieces += [node, []]
            else:
                pieces[-1].append(node)
        needed_later = self._needed_after(pieces)
        dtypes = value_dtypes(graph)
        for index, piece in enumerate(pieces):
            if isinstance(piece, Node):
                self.steps.append(piece)
                continue
            if not piece:
                continue
            defined = {node.name for node in piece}
            inputs = sorted({ref for node in piece for ref in iter_refs(node.args) + iter_refs(node.kwargs)}
                            - defined)
            outputs = [node.name for node in piece if node.name in needed_later[index]]
            program = NodeProgram(f"{graph.name}_{index}", inputs, piece, outputs, kernels, dtypes)
            self.steps.append(Segment(program, inputs, outputs))

    def _needed_after(self, pieces) -> list[set[str]]:
        """For each piece, the names used by any later piece or by the graph's outputs."""
        needed: list[set[str]] = []
        later = set(self.graph.outputs)
        for piece in reversed(pieces):
            needed.append(set(later))
            nodes = [piece] if isinstance(piece, Node) else piece
            for node in nodes:
                later.update(iter_refs(node.args) + iter_refs(node.kwargs))
        return list(reversed(needed))

    @staticmethod
    def run_group(programs: list["SegmentedProgram"], envs: list[dict[str, torch.Tensor]],
                  collective: Callable[[Node, list[list]], list[torch.Tensor]]) -> list:
        """Runs every rank's program in lockstep; returns each rank's graph outputs."""
        with torch.no_grad():
            for step_index, step in enumerate(programs[0].steps):
                if isinstance(step, Node):
                    per_rank = [decode_arg(step.args, env.__getitem__) for env in envs]
                    try:
                        results = collective(step, per_rank)
                    except (RuntimeError, ValueError, TypeError, IndexError) as err:
                        raise GraphExecutionError(f"graph {programs[0].graph.name!r}: collective {step.name!r} "
                                                  f"({step.op}) failed: {err}; re-download or recompile the "
                                                  "model") from None
                    for env, result in zip(envs, results):
                        env[step.name] = result
                    continue
                for program, env in zip(programs, envs):
                    segment = program.steps[step_index]
                    values = segment.program(*[env[name] for name in segment.inputs])
                    env.update(zip(segment.outputs, values))
        return [[env[name] for name in programs[0].graph.outputs] for env in envs]
