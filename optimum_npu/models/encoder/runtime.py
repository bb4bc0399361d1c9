"""Run a compiled encoder: pick the bucket of each call, pad, run on the device engine, cut the padding off.

A batch of ``n`` rows of ``L`` tokens runs on the smallest sequence bucket ``>= L``; its rows go in
calls of at most the largest batch bucket, each call on the smallest batch bucket that holds it.
Padded tokens are masked (their attention bias is the dtype's minimum), padded rows are discarded,
so the outputs at real tokens are the ones an unpadded run gives.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from optimum_npu.device.buckets import Bucket, smallest_bucket
from optimum_npu.device.engine import DeviceEngine
from optimum_npu.models.encoder.tasks import EncoderTask
from optimum_npu.models.encoder.wrapper import attention_bias


class EncoderInputError(ValueError):
    """Inputs the compiled encoder cannot take (refused before any compute)."""


@dataclass(frozen=True)
class EncoderCall:
    """One graph call: its bucket, the real rows and tokens it carried, and its simulated seconds."""

    bucket: Bucket
    rows: int
    tokens: int
    seconds: float

    @property
    def computed_tokens(self) -> int:
        return self.bucket.batch * self.bucket.tokens


@dataclass
class EncoderStats:
    """Every call since the model was loaded (or ``reset()``): buckets used, padding waste, simulated time."""

    calls: list[EncoderCall] = field(default_factory=list)
    memory: dict[str, int] = field(default_factory=dict)

    @property
    def buckets_used(self) -> dict[str, int]:
        """Calls per bucket graph."""
        return dict(Counter(call.bucket.name for call in self.calls))

    @property
    def padding_waste(self) -> float:
        """Padded tokens / tokens computed (0 when every call fills its bucket)."""
        computed = sum(call.computed_tokens for call in self.calls)
        return 1.0 - sum(call.tokens for call in self.calls) / computed if computed else 0.0

    @property
    def seconds(self) -> float:
        """Simulated device seconds (compute and host copies) of every call."""
        return sum(call.seconds for call in self.calls)

    @property
    def sequences(self) -> int:
        return sum(call.rows for call in self.calls)

    def reset(self) -> None:
        self.calls.clear()

    def __str__(self) -> str:
        return (f"{self.sequences} sequences in {len(self.calls)} calls, {self.seconds * 1e3:.3f} ms simulated, "
                f"padding waste {self.padding_waste:.1%}, buckets {self.buckets_used}")


class EncoderRuntime:
    """A compiled encoder on a ``DeviceEngine``: ``run(input_ids, attention_mask, token_type_ids)``.

    Args:
        engine: the bucket graphs loaded on the device.
        buckets: the buckets of those graphs (from their attributes).
        task: the task (which outputs are per token).
        outputs: the names of the graphs' outputs, in order.
        input_names: the graphs' inputs, in order.
        dtype: the compute dtype (of the attention bias).
        pad_token_id: the id padded tokens get.
        vocab_size: token ids must be below it.
    """

    def __init__(self, engine: DeviceEngine, buckets: list[Bucket], task: EncoderTask, outputs: tuple[str, ...],
                 input_names: tuple[str, ...], dtype: torch.dtype, pad_token_id: int, vocab_size: int):
        self.engine, self.buckets, self.task, self.outputs = engine, buckets, task, outputs
        self.input_names, self.dtype, self.pad_token_id = input_names, dtype, pad_token_id
        self.vocab_size = vocab_size
        self.seq_lens = sorted({b.tokens for b in buckets})
        self.max_batch = max(b.batch for b in buckets)
        self.stats = EncoderStats(memory=dict(engine.memory))

    def check(self, input_ids: torch.Tensor, truncation: bool) -> int:
        """The token width the call runs with (``truncation``: cut to the largest bucket instead of refusing)."""
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype not in (
                torch.long, torch.int32) or input_ids.shape[0] < 1 or input_ids.shape[1] < 1:
            raise EncoderInputError(f"input_ids must be an integer tensor [batch, tokens] with at least one token, got "
                                    f"{getattr(input_ids, 'dtype', type(input_ids).__name__)} "
                                    f"{list(getattr(input_ids, 'shape', []))}; pass the tokenizer's "
                                    "return_tensors='pt' output")
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= self.vocab_size:
            raise EncoderInputError(f"input_ids holds {int(input_ids.min())}..{int(input_ids.max())}, outside the "
                                    f"model's token ids [0, {self.vocab_size - 1}]; use the model's tokenizer")
        width, largest = input_ids.shape[1], self.seq_lens[-1]
        if width > largest and not truncation:
            needed = 1 << (width - 1).bit_length()
            raise EncoderInputError(
                f"the input has {width} tokens but the largest compiled sequence bucket is {largest} "
                f"(seq_lens={self.seq_lens}): add a bucket >= {width} (e.g. {needed}, within the model's position "
                f"limit) to seq_lens and recompile, truncate when tokenizing (truncation=True, max_length={largest}), "
                "or pass truncation=True to the model")
        return min(width, largest)

    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
            token_type_ids: torch.Tensor | None = None, truncation: bool = False) -> dict[str, torch.Tensor]:
        """The task outputs for a batch ([n, width, ...] per token, [n, ...] per sequence)."""
        width = self.check(input_ids, truncation)
        inputs = {"input_ids": input_ids[:, :width],
                  "attention_mask": _given(attention_mask, input_ids, "attention_mask", 1)[:, :width],
                  "token_type_ids": _given(token_type_ids, input_ids, "token_type_ids", 0)[:, :width]}
        chunks: dict[str, list[torch.Tensor]] = {name: [] for name in self.outputs}
        for start in range(0, input_ids.shape[0], self.max_batch):
            part = {name: tensor[start:start + self.max_batch] for name, tensor in inputs.items()}
            for name, tensor in zip(self.outputs, self._run_chunk(part, width)):
                chunks[name].append(tensor)
        return {name: torch.cat(parts) for name, parts in chunks.items()}

    def _run_chunk(self, part: dict[str, torch.Tensor], width: int) -> tuple[torch.Tensor, ...]:
        rows = part["input_ids"].shape[0]
        bucket = smallest_bucket(self.buckets, rows, width)
        fills = {"input_ids": self.pad_token_id, "attention_mask": 0, "token_type_ids": 0}
        padded = {name: _pad(part[name].long(), bucket, fills[name]) for name in fills}
        graph_inputs = {"input_ids": padded["input_ids"], "attention_bias": attention_bias(padded["attention_mask"],
                                                                                           self.dtype),
                        "token_type_ids": padded["token_type_ids"]}
        result, record = self.engine.run(bucket.name, {n: graph_inputs[n] for n in self.input_names}, "encoder")
        result = result if isinstance(result, tuple) else (result,)
        real_tokens = int(part["attention_mask"].sum())
        self.stats.calls.append(EncoderCall(bucket, rows, real_tokens, record.total_seconds))
        return tuple(out[:rows, :width] if name in self.task.token_outputs else out[:rows]
                     for name, out in zip(self.outputs, result))


def _given(value: torch.Tensor | None, input_ids: torch.Tensor, name: str, default: int) -> torch.Tensor:
    if value is None:
        return torch.full_like(input_ids, default)
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(input_ids.shape):
        raise EncoderInputError(f"{name} must be a tensor of the shape of input_ids {list(input_ids.shape)}, got "
                                f"{list(getattr(value, 'shape', []))}; pass the tokenizer's outputs together")
    if name == "attention_mask" and not bool(((value == 0) | (value == 1)).all()):
        raise EncoderInputError("attention_mask must hold only 0 (padding) and 1 (token)")
    if name == "token_type_ids" and (int(value.min()) < 0 or int(value.max()) > 1 << 16):
        raise EncoderInputError("token_type_ids must hold small non-negative segment ids, as the tokenizer gives")
    return value


def _pad(tensor: torch.Tensor, bucket: Bucket, fill: int) -> torch.Tensor:
    """[rows, width] -> [bucket.batch, bucket.tokens], padded with ``fill``."""
    out = torch.full((bucket.batch, bucket.tokens), fill, dtype=torch.long)
    out[:tensor.shape[0], :tensor.shape[1]] = tensor
    return out
