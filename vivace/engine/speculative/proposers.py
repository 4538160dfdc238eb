"""The proposer an EngineConfig's `speculative` names (None when speculation is off)."""

from __future__ import annotations

from vivace.engine.config import EngineConfig
from vivace.engine.speculative.draft_model import DraftModelProposer, draft_engine_config
from vivace.engine.speculative.ngram import NgramProposer


def make_proposer(
    config: EngineConfig, target_vocab_size: int, max_model_len: int
) -> NgramProposer | DraftModelProposer | None:
    """A proposer for the scheduler, or None."""
    spec = config.speculative_config
    if spec is None:
        return None
    if spec.method == "draft":
        from vivace.engine.engine import LLMEngine  # the draft runs in an engine of its own

        draft = LLMEngine(draft_engine_config(config, spec.model, max_model_len))
        return DraftModelProposer(spec.k, draft, target_vocab_size)
    return NgramProposer(spec)
