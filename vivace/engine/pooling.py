"""Embeddings from the engine: the mean of a prompt's final hidden states (after the model's last norm),
L2-normalized. The runner sums each prefill chunk's rows; the output processor adds the chunks up and
finishes the vector when the request does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vivace.engine.config import SamplingParams
from vivace.engine.scheduler import ScheduledSeq
from vivace.engine.sequence import Sequence

# An embedding request runs its prompt and samples one token it does not use: the engine's only
# way to finish a request; greedy, so it costs no sampling work beyond an argmax.
EMBEDDING_PARAMS = SamplingParams(max_tokens=1, temperature=0.0)


@dataclass
class PooledChunk:
    """The sum of one prefill chunk's final hidden states over `seq`'s prompt positions, and how many."""

    seq: Sequence
    start: int  # the chunk's first position (0: the sum starts over)
    total: torch.Tensor  # [hidden], float32
    count: int


def pool_chunk(hidden: torch.Tensor, row_end: int, item: ScheduledSeq) -> PooledChunk | None:
    """The pooled sum of the rows of `item` (ending at `row_end` in `hidden`) that hold prompt tokens."""
    seq = item.seq
    prompt_rows = min(item.start + item.num_tokens, seq.num_prompt_tokens) - item.start
    if prompt_rows <= 0:
        return None
    row_start = row_end - item.num_tokens
    return PooledChunk(seq, item.start, hidden[row_start : row_start + prompt_rows].float().sum(dim=0), prompt_rows)


def mean_normalized(total: torch.Tensor, count: int) -> list[float]:
    """The L2-normalized mean: what /v1/embeddings returns."""
    return torch.nn.functional.normalize(total / count, dim=0).tolist()
