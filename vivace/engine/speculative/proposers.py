"""The proposer a SpeculativeConfig names (None when speculation is off)."""

from __future__ import annotations

from vivace.engine.speculative.config import SpeculativeConfig
from vivace.engine.speculative.ngram import NgramProposer


def make_proposer(config: SpeculativeConfig | None) -> NgramProposer | None:
    """A proposer for the scheduler, or None."""
    if config is None:
        return None
    return NgramProposer(config)
