"""Next-token masks of a step's constrained rows, computed on a worker thread while the model runs.

A mask is llguidance's bitmask (bit t of a row's int32 words set = token t allowed). The runner starts
the computation before the forward pass and collects it before sampling; llguidance releases the GIL,
so the masks cost the step little beyond the forward. Rows without a constraint are not in the mask
at all, and a step without constrained rows starts nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import llguidance
import torch


@dataclass
class RowMasks:
    """The allowed tokens of some rows of a step: `bits[k]` is row `rows[k]`'s bitmask [W] (int32 words)."""

    rows: list[int]
    bits: torch.Tensor


class GrammarMasks:
    """Computes RowMasks for a step's matchers on one worker thread (created on first use)."""

    def __init__(self, vocab_size: int) -> None:
        self.words = (vocab_size + 31) // 32
        self._pool: ThreadPoolExecutor | None = None
        self._executor: llguidance.LLExecutor | None = None

    def start(self, matchers: Sequence[llguidance.LLMatcher | None]) -> Future[RowMasks] | None:
        """Begin computing the masks of rows whose matcher is not None; None when there are none."""
        rows = [i for i, m in enumerate(matchers) if m is not None]
        if not rows:
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vivace-grammar")
            self._executor = llguidance.LLExecutor()
        return self._pool.submit(self._compute, rows, [matchers[i] for i in rows])

    def _compute(self, rows: list[int], matchers: list[llguidance.LLMatcher]) -> RowMasks:
        bits = torch.full((len(rows), self.words), -1, dtype=torch.int32)
        assert self._executor is not None
        self._executor.unsafe_compute_mask_ptr(
            [(m, k) for k, m in enumerate(matchers)], bits.data_ptr(), self.words * 4, len(rows)
        )
        return RowMasks(rows, bits)
