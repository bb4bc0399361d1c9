"""Run a compiled encoder: pick the bucket of each call, pad, run on the device engine, cut the padding off.

A batch of ``n`` rows of length ``L`` runs on a bucket of length ``>= L`` (text: the smallest sequence
bucket; images: the bucket of their size, see ``feeds.py``); its rows go in calls of at most the largest
batch bucket, each call on the smallest batch bucket that holds it. Padded tokens are masked (their
attention bias is the dtype's minimum), padded rows are discarded, so the outputs at real tokens are
the ones an unpadded run gives.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from optimum_npu.device.buckets import Bucket
from optimum_npu.device.engine import DeviceEngine
from optimum_npu.models.encoder.feeds import EncoderInputError
from optimum_npu.models.encoder.tasks import EncoderTask

__all__ = ["EncoderCall", "EncoderInputError", "EncoderRuntime", "EncoderStats"]


#: What the rows of a bucket kind are called in the stats line (text: sequences).
_NOUNS = {"image": "images", "audio": "audio clips"}


@dataclass(frozen=True)
class EncoderCall:
    """One graph call: its bucket, the real rows and tokens it carried (images: rows x size), and its simulated
    seconds."""

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
        noun = _NOUNS.get(self.calls[0].bucket.kind, "sequences") if self.calls else "sequences"
        return (f"{self.sequences} {noun} in {len(self.calls)} calls, {self.seconds * 1e3:.3f} ms simulated, "
                f"padding waste {self.padding_waste:.1%}, buckets {self.buckets_used}")


class EncoderRuntime:
    """A compiled encoder on a ``DeviceEngine``: ``run({"input_ids": ..., ...})``.

    Args:
        engine: the bucket graphs loaded on the device.
        buckets: the buckets of those graphs (from their attributes).
        task: the task (which outputs are per token).
        outputs: the names of the graphs' outputs, in order.
        feed: checks and pads the inputs of the task's modality (``feeds.py``).
    """

    def __init__(self, engine: DeviceEngine, buckets: list[Bucket], task: EncoderTask, outputs: tuple[str, ...],
                 feed):
        self.engine, self.buckets, self.task, self.outputs, self.feed = engine, buckets, task, outputs, feed
        self.lengths = sorted({b.tokens for b in buckets})
        self.max_batch = max(b.batch for b in buckets)
        self.stats = EncoderStats(memory=dict(engine.memory))

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.feed.names

    def run(self, given: dict[str, torch.Tensor | None], truncation: bool = False) -> dict[str, torch.Tensor]:
        """The task outputs for a batch ([n, length, ...] per token, [n, ...] per row); inputs are checked
        before any compute (``truncation``: cut text to the largest bucket instead of refusing it)."""
        inputs, length = self.feed.prepare(given, self.lengths, truncation)
        rows = next(iter(inputs.values())).shape[0]
        chunks: dict[str, list[torch.Tensor]] = {name: [] for name in self.outputs}
        for start in range(0, rows, self.max_batch):
            part = {name: tensor[start:start + self.max_batch] for name, tensor in inputs.items()}
            for name, tensor in zip(self.outputs, self._run_chunk(part, length)):
                chunks[name].append(tensor)
        return {name: torch.cat(parts) for name, parts in chunks.items()}

    def _run_chunk(self, part: dict[str, torch.Tensor], length: int) -> tuple[torch.Tensor, ...]:
        rows = next(iter(part.values())).shape[0]
        bucket = self.feed.bucket(self.buckets, rows, length)
        result, record = self.engine.run(bucket.name, self.feed.graph_inputs(part, bucket), "encoder")
        result = result if isinstance(result, tuple) else (result,)
        self.stats.calls.append(EncoderCall(bucket, rows, self.feed.real_units(part, length), record.total_seconds))
        return tuple(self.feed.cut(out, rows, length, name in self.task.token_outputs)
                     for name, out in zip(self.outputs, result))
