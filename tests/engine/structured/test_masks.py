"""Grammar masks in the batched sampler: masked rows only ever draw allowed tokens (greedy: the best
allowed one), unconstrained rows are untouched, and the bitmask unpacks as llguidance packs it."""

from __future__ import annotations

import llguidance
import pytest
import torch

from vivace.engine.config import SamplingParams
from vivace.engine.sampler import sample
from vivace.engine.sampling_batch import SamplingBatch, unpack_bitmask
from vivace.engine.structured.masks import RowMasks

V = 1000


def pack(allowed: torch.Tensor) -> torch.Tensor:
    """The obvious reference packing: bit t % 32 of word t // 32 set when token t is allowed."""
    words = torch.zeros(allowed.shape[0], (allowed.shape[1] + 31) // 32, dtype=torch.int64)
    for r, t in allowed.nonzero().tolist():
        words[r, t // 32] |= 1 << (t % 32)
    words = torch.where(words >= 2**31, words - 2**32, words)  # as int32 stores it
    return words.to(torch.int32)


def test_unpack_matches_reference_packing():
    g = torch.Generator().manual_seed(0)
    allowed = torch.rand(3, V, generator=g) < 0.3
    assert torch.equal(unpack_bitmask(pack(allowed), V), allowed)


def test_unpack_matches_llguidance():
    from vivace.engine.loaders.tokenizer_file import load_tokenizer

    tokenizer = load_tokenizer()
    tok = llguidance.LLTokenizer(tokenizer.backend.to_str(), eos_token=tokenizer.eos_token_id)
    matcher = llguidance.LLMatcher(tok, llguidance.grammar_from("regex", "[0-9]+ apples"), log_level=0)
    bits = torch.frombuffer(bytearray(matcher.compute_bitmask()), dtype=torch.int32).unsqueeze(0)
    allowed = unpack_bitmask(bits, tok.vocab_size)[0]
    # llguidance's own answer, one token at a time: how many of [t] it would accept.
    for t in list(range(0, tok.vocab_size, 97)) + allowed.nonzero().squeeze(1).tolist()[:50]:
        assert bool(allowed[t]) == (matcher.validate_tokens([t]) == 1), tokenizer.decode([t])
    assert 0 < int(allowed.sum()) < 2000


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_masked_rows_draw_only_allowed_tokens(temperature):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, V, generator=g) * 3
    allowed = torch.rand(2, V, generator=g) < 0.05
    rows = [0, 2]
    params = [SamplingParams(temperature=temperature, seed=i) for i in range(4)]
    for trial in range(20):
        batch = SamplingBatch.build(
            params, [[]] * 4, [[]] * 4, [None] * 4, V, "cpu", grammar=RowMasks(rows, pack(allowed))
        )
        plain = SamplingBatch.build(params, [[]] * 4, [[]] * 4, [None] * 4, V, "cpu")
        torch.manual_seed(trial)
        tokens = sample(logits, batch).token_ids
        torch.manual_seed(trial)
        reference = sample(logits, plain).token_ids
        for k, r in enumerate(rows):
            assert allowed[k, tokens[r]]
            if temperature == 0.0:
                masked = logits[r].masked_fill(~allowed[k], float("-inf"))
                assert tokens[r] == int(masked.argmax())
        if temperature == 0.0:  # unconstrained rows are untouched
            assert [tokens[1], tokens[3]] == [reference[1], reference[3]]
