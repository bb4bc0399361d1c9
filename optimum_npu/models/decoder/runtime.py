"""Host runtime of a compiled decoder: owns the KV cache and block table, picks the graph
for each step, and runs it on the simulated device.

Prefill runs one sequence at a time on the batch-1 ``prefill`` graph, chunk by chunk.
Decode runs all active sequences on the smallest compiled decode batch that holds them,
padding the rest (padding rows have position -1: they neither write nor read the cache).
"""

from __future__ import annotations

import weakref
from pathlib import Path

import torch

from optimum_npu.compile.artifact import ArtifactError, read_graph
from optimum_npu.compile.weights import load_weights
from optimum_npu.device.cost import GraphCostModel
from optimum_npu.device.device import get_device
from optimum_npu.device.executor import Program, peak_activation_bytes
from optimum_npu.device.spec import NPUSpec
from optimum_npu.models.decoder.npu_config import NPUDecoderConfig
from optimum_npu.models.decoder.stats import NPUStats, StepRecord
from optimum_npu.models.model_config import DecoderModelConfig
from optimum_npu.schema import WEIGHTS_FILE, Graph, dtype_from_name


class DecoderRuntime:
    """Loads a compiled decoder's graphs and weights onto one simulated device and runs them.

    Args:
        root: the verified artifact directory.
        config: the compile configuration stored in the artifact (with runtime options applied).
        model: the normalised model config.
        spec: the target NPU spec.
        graph_names: graphs to load (``prefill``, ``decoder_batch_<n>``...).
    """

    def __init__(self, root: Path, config: NPUDecoderConfig, model: DecoderModelConfig, spec: NPUSpec,
                 graph_names: list[str]):
        self.config = config
        self.model = model
        self.spec = spec
        self.device = get_device(spec, config.device)
        graphs = {name: read_graph(root, name) for name in graph_names}
        weights = load_weights(root / WEIGHTS_FILE)
        dtype = getattr(torch, config.dtype)
        cache_shape = (config.kvcache_num_blocks, model.num_kv_heads, config.kvcache_block_size, model.head_dim)
        request = {
            "weights": sum(t.nbytes for t in {id(t): t for t in weights.values()}.values()),
            "kv_cache": 2 * model.num_layers * torch.Size(cache_shape).numel() * dtype.itemsize,
            "workspace": max(peak_activation_bytes(g) for g in graphs.values()),
        }
        owner = f"{model.architecture} (max_seq_len={config.max_seq_len}, batch_size={config.batch_size})"
        handles = self.device.memory.reserve(owner, request)
        self._finalizer = weakref.finalize(self, self.device.memory.release, handles)
        self.memory = request

        self.kv_cache = {f"{kind}_cache_{layer}": torch.zeros(cache_shape, dtype=dtype)
                         for layer in range(model.num_layers) for kind in ("key", "value")}
        self.block_table = torch.arange(config.kvcache_num_blocks, dtype=torch.int32).view(
            config.batch_size, config.blocks_per_sequence)
        self.programs = {name: Program(graph) for name, graph in graphs.items()}
        self.costs = {name: GraphCostModel(graph, spec, config.dtype) for name, graph in graphs.items()}
        self.bindings = {name: self._bind(graph, weights) for name, graph in graphs.items()}
        self.decode_buckets = sorted(config.decoder_batch_sizes)
        self.stats = self.new_stats()

    def new_stats(self) -> NPUStats:
        return NPUStats(device=self.device.name, spec=self.spec.name, memory=dict(self.memory),
                        memory_capacity=self.device.memory.capacity)

    def release(self) -> None:
        """Frees this model's memory on the device (also done when the runtime is garbage collected)."""
        self._finalizer()

    def _bind(self, graph: Graph, weights: dict[str, torch.Tensor]) -> list:
        binding = []
        for spec in graph.inputs:
            if spec.kind == "weight":
                tensor = weights.get(spec.source)
                if tensor is None or tuple(tensor.shape) != spec.shape or tensor.dtype != dtype_from_name(spec.dtype):
                    raise ArtifactError(f"graph {graph.name!r} needs weight {spec.source!r} {list(spec.shape)} "
                                        f"{spec.dtype}, which the weights file does not hold; recompile the model")
                binding.append(tensor)
            elif spec.kind == "kv_cache":
                binding.append(self.kv_cache[spec.name])
            else:
                binding.append(spec.name)
        return binding

    def _run(self, graph_name: str, phase: str, inputs: dict[str, torch.Tensor], contexts: list[list[int]],
             active: int, tokens: int) -> torch.Tensor:
        args = [inputs[item] if isinstance(item, str) else item for item in self.bindings[graph_name]]
        logits = self.programs[graph_name](*args)
        seconds, attention = self.costs[graph_name].call_seconds(contexts)
        host_bytes = sum(t.nbytes for t in inputs.values()) + logits.nbytes
        host = host_bytes / self.spec.host_link_bandwidth
        self.device.advance(seconds + host)
        self.stats.record(StepRecord(phase, graph_name, active, tokens, seconds, attention, host))
        return logits

    def prefill(self, tokens: list[int], slot: int) -> torch.Tensor:
        """Runs a prompt through the prefill graph chunk by chunk; returns the last token's logits [V]."""
        chunk = self.config.prefill_chunk_size
        self._check_length(len(tokens))
        logits = None
        for start in range(0, len(tokens), chunk):
            part = tokens[start:start + chunk]
            count = len(part)
            input_ids = torch.zeros(1, chunk, dtype=torch.long)
            input_ids[0, :count] = torch.tensor(part, dtype=torch.long)
            positions = torch.full((1, chunk), -1, dtype=torch.long)
            positions[0, :count] = torch.arange(start, start + count)
            inputs = {"input_ids": input_ids, "positions": positions,
                      "block_table": self.block_table[slot:slot + 1],
                      "logits_index": torch.tensor([count - 1])}
            contexts = [[p + 1 for p in range(start, start + count)] + [0] * (chunk - count)]
            logits = self._run("prefill", "prefill", inputs, contexts, active=1, tokens=count)
        return logits[0]

    def decode_bucket(self, active: int) -> int:
        for size in self.decode_buckets:
            if size >= active:
                return size
        raise ValueError(f"{active} sequences exceed batch_size={self.config.batch_size}; "
                         f"compile with batch_size >= {active}")

    def decode(self, tokens: list[int], slots: list[int], positions: list[int]) -> torch.Tensor:
        """One decode step for the active sequences; returns logits [n, V]."""
        active = len(tokens)
        self._check_length(max(positions) + 1)
        bucket = self.decode_bucket(active)
        pad = bucket - active
        input_ids = torch.tensor(tokens + [0] * pad, dtype=torch.long).view(bucket, 1)
        position_tensor = torch.tensor(positions + [-1] * pad, dtype=torch.long).view(bucket, 1)
        table = self.block_table[torch.tensor(slots + [slots[0]] * pad)]
        inputs = {"input_ids": input_ids, "positions": position_tensor, "block_table": table,
                  "logits_index": torch.zeros(bucket, dtype=torch.long)}
        contexts = [[p + 1] for p in positions] + [[0]] * pad
        return self._run(f"decoder_batch_{bucket}", "decode", inputs, contexts, active, active)[:active]

    def _check_length(self, length: int) -> None:
        if length > self.config.max_seq_len:
            raise ValueError(f"sequence length {length} exceeds max_seq_len={self.config.max_seq_len}; "
                             "recompile with a larger max_seq_len or shorten the input")
