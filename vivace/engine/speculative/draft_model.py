"""Draft-model proposer: a smaller model that shares the target's tokenizer guesses the next k tokens.

The draft runs in an engine of its own (its own KV cache, prefix caching on): each proposal is a
greedy request for k tokens over the sequence's tokens so far, so the context it already computed
for an earlier proposal comes from its prefix cache and only the tokens since are prefilled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vivace.engine.config import EngineConfig, InvalidParameterError, SamplingParams

if TYPE_CHECKING:
    from vivace.engine.engine import LLMEngine


class DraftModelProposer:
    """Proposes a sequence's next tokens by greedy decoding on a draft model."""

    def __init__(self, k: int, draft: LLMEngine, target_vocab_size: int) -> None:
        if draft.model_config.vocab_size > target_vocab_size:
            raise InvalidParameterError(
                "speculative",
                f"the draft model's vocabulary ({draft.model_config.vocab_size}) is larger than the target's "
                f"({target_vocab_size}); the two must share a tokenizer",
            )
        self.k = k
        self.draft = draft
        self._ids = 0

    def propose(self, seq_id: int, tokens: list[int], max_k: int) -> list[int]:
        """Up to min(k, max_k) tokens the draft model decodes greedily after `tokens`."""
        k = min(self.k, max_k, self.draft.max_model_len - len(tokens) - 1)
        if k <= 0 or max(tokens) >= self.draft.model_config.vocab_size:
            return []  # a target token the draft's smaller vocabulary lacks
        request_id = f"draft-{self._ids}"
        self._ids += 1
        self.draft.add_request(
            request_id, tokens, SamplingParams(temperature=0.0, max_tokens=k, ignore_eos=True), stream=False
        )
        while True:
            for out in self.draft.step():
                if out.request_id == request_id:
                    return list(out.outputs[0].token_ids)

    def observe(self, seq_id: int, proposed: int, accepted: int) -> None:
        """Nothing to learn: the draft model proposes every step."""

    def forget(self, seq_id: int) -> None:
        """Nothing kept per sequence."""


def draft_engine_config(target: EngineConfig, model: str, max_model_len: int) -> EngineConfig:
    """The draft model's engine: the target's device and kernels, prefix caching on, a small KV budget."""
    return EngineConfig(
        model=model,
        tokenizer=target.tokenizer,
        device=target.device,
        dtype=target.dtype,
        quantization=target.quantization,
        attention_backend=target.attention_backend,
        cuda_graphs=False,
        block_size=target.block_size,
        kv_cache_memory_bytes=target.kv_cache_memory_bytes,
        kv_cache_memory_fraction=target.kv_cache_memory_fraction,
        max_num_seqs=1,
        max_num_batched_tokens=max(target.max_num_batched_tokens, max_model_len),
        max_model_len=max_model_len,
        enable_prefix_caching=True,
        num_threads=target.num_threads,
    )
