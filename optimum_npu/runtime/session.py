"""A static batch on the runtime: the rows of one ``generate()`` call, prefilled then decoded together.

This is what Transformers' generation loop needs from the runtime (the loop itself samples, stops and
streams): ``start`` prefills every prompt and returns the first logits, ``step`` decodes one token
per row, ``finish`` returns the blocks. Rows are ``Sequence`` objects with request ids 0..B-1.
"""

from __future__ import annotations

from typing import Any

import torch

from optimum_npu.runtime.runner import StepRunner
from optimum_npu.runtime.sequence import Sequence


class BatchSession:
    """The sequences of one call, run by a ``StepRunner``.

    Args:
        runner: the step runner of the loaded decoder.
    """

    def __init__(self, runner: StepRunner):
        self.runner = runner
        self.sequences: list[Sequence] = []

    def check(self, prompts: list[list[int]]) -> None:
        """Refuses prompts the graphs cannot hold, before any compute."""
        for prompt in prompts:
            self.runner.check_length(len(prompt))

    def start(self, prompts: list[list[int]], extras: list[dict | None] | None = None,
              rope_deltas: list[int] | None = None, visual: Any = None,
              all_positions: bool = False, request_inputs: list[dict] | None = None
              ) -> torch.Tensor | list[torch.Tensor]:
        """Ends any previous batch, starts new stats and prefills each prompt chunk by chunk.

        Args:
            prompts: token ids of each row (padding removed).
            extras: per-row per-token prefill inputs of multimodal models (see ``Sequence.extras``).
            rope_deltas: per-row M-RoPE deltas (rotary minus cache position of generated tokens).
            visual: the visual encoder's stats of this call, reported with the runtime's.
            all_positions: return every prompt position's logits (the ``prefill_all`` graph).
            request_inputs: per-row inputs given whole to each prefill chunk (see ``Sequence.request_inputs``).
        Returns:
            The next-token logits of every row [B, V] (``all_positions``: per row, [prompt tokens, V]).
        """
        self.check(prompts)
        self.finish()
        stats = self.runner.reset_stats()
        stats.sequences = len(prompts)
        stats.visual = visual
        extras = extras or [None] * len(prompts)
        deltas = rope_deltas or [None] * len(prompts)
        given = request_inputs or [None] * len(prompts)
        self.sequences = [Sequence(row, prompt, extras=extra, rope_delta=delta, request_inputs=inputs)
                          for row, (prompt, extra, delta, inputs) in enumerate(zip(prompts, extras, deltas, given))]
        rows = []
        for seq in self.sequences:
            cached = self.runner.admit(seq)
            if all_positions:
                if cached:
                    raise ValueError("logits of every prompt position need every position computed, but a cached "
                                     "prefix was reused: load the model without enable_prefix_caching for scoring")
                parts = []
                while seq.num_uncomputed:
                    parts.append(self.runner.prefill(seq, True))
                rows.append(torch.cat(parts))                                  # [prompt tokens, V]
            else:
                logits = None
                while logits is None:
                    logits = self.runner.prefill(seq)
                rows.append(logits)
            stats.request_ttft_s.append(stats.ttft_s)  # prefills run one after another: this row's first token
        return rows if all_positions else torch.stack(rows)

    def step(self, tokens: list[int]) -> torch.Tensor:
        """Appends one token to every row and decodes them together; returns the next logits [B, V]."""
        if len(tokens) != len(self.sequences) or not self.sequences:
            raise RuntimeError("decode step without a matching prefill; call generate() or forward() on a prompt")
        for seq, token in zip(self.sequences, tokens):
            seq.append(token)
        return self.runner.decode(self.sequences)

    def finish(self) -> None:
        """Returns every row's blocks to the pool (cached blocks stay reusable)."""
        for seq in self.sequences:
            self.runner.finish(seq)
        self.sequences = []
