"""The proposer an EngineConfig's `speculative` names (None when speculation is off)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vivace.engine.config import EngineConfig
from vivace.engine.models.linear import float_weight
from vivace.engine.speculative.draft_model import DraftModelProposer, draft_engine_config
from vivace.engine.speculative.medusa_heads import load_medusa_heads
from vivace.engine.speculative.medusa_proposer import MedusaProposer
from vivace.engine.speculative.ngram import NgramProposer

if TYPE_CHECKING:
    from vivace.engine.models.blocks import DecoderModel


def make_proposer(
    config: EngineConfig, model: DecoderModel, max_model_len: int, tree_attention: bool = False
) -> NgramProposer | DraftModelProposer | MedusaProposer | None:
    """A proposer for the scheduler, or None. `tree_attention`: whether draft trees can be verified (else chains)."""
    spec = config.speculative_config
    if spec is None:
        return None
    if spec.method == "draft":
        from vivace.engine.engine import LLMEngine  # the draft runs in an engine of its own

        draft = LLMEngine(draft_engine_config(config, spec.model, max_model_len))
        return DraftModelProposer(spec.k, draft, model.cfg.vocab_size)
    if spec.method == "medusa":
        return MedusaProposer(
            load_medusa_heads(spec.model, float_weight(model.lm_head)), spec.k, spec.tree if tree_attention else 0
        )
    return NgramProposer(spec)
