"""One generation stream: its tokens, KV blocks and progress. Plain data, no tensors."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from vivace.engine.config import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """A prompt plus the tokens generated for it; one per `n` choice of a request."""

    seq_id: int
    request_id: str
    index: int  # which of the request's n choices
    token_ids: list[int]  # prompt followed by generated tokens
    num_prompt_tokens: int
    params: SamplingParams
    arrival_order: int
    generator: Any = None  # torch.Generator for seeded sampling, owned by the engine
    status: SequenceStatus = SequenceStatus.WAITING
    block_table: list[int] = field(default_factory=list)  # KV group 0's (every layer's, for one group)
    group_tables: list[list[int]] = field(default_factory=list)  # KV groups 1.. (kv_groups.py), if any
    num_computed_tokens: int = 0  # tokens whose KV is in the cache (or written this step)
    num_cached_tokens: int = 0  # of the prompt, reused from the prefix cache at admission
    num_preemptions: int = 0
    score_from: int | None = None  # return logprobs of prompt tokens from this position on
    pool: bool = False  # return the pooled final hidden states of its prompt (an embedding)
    queued_at: float = 0.0  # time.monotonic() when the engine accepted it
    queue_time: float | None = None  # seconds from queued_at to its first scheduled step
    block_hashes: list[bytes] = field(default_factory=list)  # chained hashes of full blocks, lazily
    num_published_blocks: int = 0  # block_table[:n] are computed and registered in the prefix cache
    finish_reason: str | None = None
    lora_id: int = 0  # the LoRA adapter its tokens run with (lora/manager.py); 0 = the base model
    session_id: str | None = None  # its conversation: finished, its blocks stay pinned a while (kv_sessions.py)

    def table(self, group: int) -> list[int]:
        """The block table of KV group `group` (0 = `block_table`)."""
        return self.block_table if group == 0 else self.group_tables[group - 1]

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED
