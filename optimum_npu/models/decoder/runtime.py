"""Host runtime of a compiled decoder: owns the KV cache and its block manager, picks the
graph for each step, and runs it on the simulated device.

Prefill runs one sequence at a time on the batch-1 ``prefill`` graph, chunk by chunk,
starting after any prefix already cached. Decode runs all active sequences on the
smallest compiled decode batch that holds them, padding the rest (padding rows have
position -1: they neither write nor read the cache).
"""

from __future__ import annotations

from pathlib import Path

import torch

from optimum_npu.device.profiler import Profiler
from optimum_npu.device.spec import NPUSpec
from optimum_npu.models.decoder.block_manager import BlockManager
from optimum_npu.models.decoder.device_group import DeviceGroup
from optimum_npu.models.decoder.memory_plan import kv_pool_bytes
from optimum_npu.models.decoder.npu_config import NPUConfigError, NPUDecoderConfig
from optimum_npu.models.decoder.stats import NPUStats, StepRecord
from optimum_npu.models.model_config import DecoderModelConfig


class DecoderRuntime:
    """Runs a compiled decoder's graphs on its devices and owns the host-side state.

    Args:
        root: the verified artifact directory.
        config: the compile configuration stored in the artifact (with runtime options applied).
        model: the normalised model config.
        spec: the target NPU spec.
        graph_names: graphs to load (``prefill``, ``decoder_batch_<n>``...).
    """

    def __init__(self, root: Path, config: NPUDecoderConfig, model: DecoderModelConfig, spec: NPUSpec,
                 graph_names: list[str]):
        if config.enable_prefix_caching and model.has_sliding_layers:
            raise NPUConfigError("enable_prefix_caching=True is not supported for models with sliding-window "
                                 "layers; load with enable_prefix_caching=False")
        self.config = config
        self.model = model
        self.spec = spec
        owner = f"{model.architecture} (max_seq_len={config.max_seq_len}, batch_size={config.batch_size})"
        self.group = DeviceGroup(root, graph_names, spec, config.device_ids, config.dtype, config.collectives, owner)
        self.device = self.group.devices[0]
        self.memory = self.group.memory
        self.kv_pools = {pool: nbytes // config.tensor_parallel_size
                         for pool, nbytes in kv_pool_bytes(model, config).items()}
        self.blocks = BlockManager(config.kvcache_num_blocks, config.kvcache_block_size,
                                   config.enable_prefix_caching)
        self.programs = self.group.ranks[0].programs
        self.costs = self.group.costs
        self.decode_buckets = sorted(config.decoder_batch_sizes)
        self.stats = self.new_stats()

    def new_stats(self) -> NPUStats:
        devices = ", ".join(d.name.split(" ")[0] for d in self.group.devices)
        return NPUStats(device=f"{devices} ({self.spec.name})" if len(self.group.devices) > 1 else self.device.name,
                        spec=self.spec.name, memory=dict(self.memory), memory_capacity=self.device.memory.capacity,
                        kv_blocks_total=self.blocks.num_blocks, kv_pools=dict(self.kv_pools),
                        tensor_parallel_size=self.config.tensor_parallel_size)

    def release(self) -> None:
        """Frees this model's memory on its devices (also done when the runtime is garbage collected)."""
        self.group.release()

    def _block_table(self, slots: list[int]) -> torch.Tensor:
        width = self.config.blocks_per_sequence
        return torch.tensor([self.blocks.table_row(slot, width) for slot in slots], dtype=torch.int32)

    def _run(self, graph_name: str, phase: str, inputs: dict[str, torch.Tensor], active: int,
             tokens: int) -> torch.Tensor:
        logits = self.group.run(graph_name, inputs)
        seconds, attention = self.costs[graph_name].call_seconds(inputs["positions"])
        host_bytes = sum(t.nbytes for t in inputs.values()) + logits.nbytes
        host = host_bytes / self.spec.host_link_bandwidth
        if self.config.profile:  # every op / fused group of the call on each device's track (model.npu_profile)
            timeline = self.costs[graph_name].timeline(inputs["positions"], host_bytes - logits.nbytes, logits.nbytes)
            vars(self).setdefault("profiler", Profiler()).record_call(self.group.devices, graph_name, phase, timeline)
        self.group.advance(seconds + host)
        self.stats.record(StepRecord(phase, graph_name, active, tokens, seconds, attention, host))
        self.stats.kv_blocks_peak = max(self.stats.kv_blocks_peak, self.blocks.used_blocks)
        return logits

    def prefill(self, tokens: list[int], slot: int, extras: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Prefills a prompt into ``slot`` chunk by chunk (after any cached prefix); returns last logits [V].

        ``extras`` holds per-token inputs of multimodal models over the whole prompt:
        ``rope_positions`` [3, n], ``visual_embeds`` [n, E], ``visual_mask`` [n], ``deepstack_embeds`` [L, n, E].
        """
        chunk = self.config.prefill_chunk_size
        self._check_length(len(tokens))
        cached = self.blocks.start_sequence(slot, tokens)
        self.stats.prefix_hit_tokens += cached
        table = self._block_table([slot])
        logits = None
        for start in range(cached, len(tokens), chunk):
            part = tokens[start:start + chunk]
            count = len(part)
            input_ids = torch.zeros(1, chunk, dtype=torch.long)
            input_ids[0, :count] = torch.tensor(part, dtype=torch.long)
            positions = torch.full((1, chunk), -1, dtype=torch.long)
            positions[0, :count] = torch.arange(start, start + count)
            inputs = {"input_ids": input_ids, "positions": positions, "block_table": table,
                      "slots": torch.tensor([slot]), "logits_index": torch.tensor([count - 1])}
            for name, values in (extras or {}).items():
                inputs[name] = _chunk_of(values, start, count, chunk, token_axis=TOKEN_AXIS.get(name, 0))
            logits = self._run("prefill", "prefill", inputs, active=1, tokens=count)
            self.blocks.append_tokens(slot, part)
        return logits[0]

    def decode_bucket(self, active: int) -> int:
        for size in self.decode_buckets:
            if size >= active:
                return size
        raise ValueError(f"{active} sequences exceed batch_size={self.config.batch_size}; "
                         f"compile with batch_size >= {active}")

    def decode(self, tokens: list[int], slots: list[int], positions: list[int],
               rope_positions: list[int] | None = None) -> torch.Tensor:
        """One decode step for the active sequences; returns logits [n, V].

        ``rope_positions`` (M-RoPE models): each row's rotary position, the same on all 3 axes.
        """
        active = len(tokens)
        self._check_length(max(positions) + 1)
        for slot, position in zip(slots, positions):
            self.blocks.reserve(slot, position + 1)
        bucket = self.decode_bucket(active)
        pad = bucket - active
        inputs = {"input_ids": torch.tensor(tokens + [0] * pad, dtype=torch.long).view(bucket, 1),
                  "positions": torch.tensor(positions + [-1] * pad, dtype=torch.long).view(bucket, 1),
                  "block_table": self._block_table(slots + [slots[0]] * pad),
                  "slots": torch.tensor(slots + [slots[0]] * pad, dtype=torch.long),
                  "logits_index": torch.zeros(bucket, dtype=torch.long)}
        if rope_positions is not None:
            inputs["rope_positions"] = torch.tensor(rope_positions + [0] * pad, dtype=torch.long).view(
                1, bucket, 1).expand(3, bucket, 1).contiguous()
        logits = self._run(f"decoder_batch_{bucket}", "decode", inputs, active, active)[:active]
        for slot, token in zip(slots, tokens):
            self.blocks.append_tokens(slot, [token])
        return logits

    def finish(self, slots: list[int]) -> None:
        """Returns the blocks of finished sequences to the pool (cached blocks stay reusable)."""
        for slot in slots:
            self.blocks.free_sequence(slot)

    def _check_length(self, length: int) -> None:
        if length > self.config.max_seq_len:
            raise ValueError(f"sequence length {length} exceeds max_seq_len={self.config.max_seq_len}; "
                             "recompile with a larger max_seq_len or shorten the input")


#: Token axis of the per-token prefill extras that do not lead with it (default 0).
TOKEN_AXIS = {"rope_positions": 1, "deepstack_embeds": 1}


def _chunk_of(values: torch.Tensor, start: int, count: int, chunk: int, token_axis: int) -> torch.Tensor:
    """Tokens ``[start, start+count)`` of a per-token tensor, zero-padded to ``chunk``, with a batch
    axis of 1 inserted before the token axis ([3, n] -> [3, 1, C]; [n, E] -> [1, C, E]; [n] -> [1, C];
    [L, n, E] -> [L, 1, C, E])."""
    part = values.narrow(token_axis, start, count)
    shape = list(values.shape)
    shape[token_axis] = chunk
    out = values.new_zeros(shape)
    out.narrow(token_axis, 0, count).copy_(part)
    return out.unsqueeze(token_axis)
