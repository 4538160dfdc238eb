"""Speculative decoding in the engine: greedy output identical to plain decoding (packaged model and a
random-weight one; batched beside rows that do not speculate, with prefix-cache hits, stop strings,
max_tokens and the context limit), sampled output distributed as plain sampling, no leaked KV blocks."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import make_test_llm
from vivace.engine.config import SamplingParams
from vivace.engine.llm import LLM

# Input-grounded prompts: their answers copy spans of the prompt, so prompt lookup finds matches.
GROUNDED = [
    "Repeat the following sentence exactly: The committee approved the new budget for the public "
    "library on Tuesday evening after a long debate.\nRepeated: The committee",
    "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\ndef mul(a, b):\n",
    "Copy this list:\n- apples\n- oranges\n- bananas\n- pears\nCopy:\n- apples\n",
]
OPEN = "Tell me a story about a dragon."


def _texts(outputs) -> list[tuple[str, list[int], str | None]]:
    return [(o.outputs[0].text, o.outputs[0].token_ids, o.outputs[0].finish_reason) for o in outputs]


@pytest.fixture(scope="module")
def pair() -> tuple[LLM, LLM]:
    return make_test_llm(max_model_len=512), make_test_llm(max_model_len=512, speculative="ngram:k=4")


def _spec_stats(llm: LLM) -> tuple[int, int, int]:
    s = llm.engine.stats()
    return s["spec_decode_num_drafts"], s["spec_decode_num_draft_tokens"], s["spec_decode_num_accepted_tokens"]


@pytest.mark.slow
def test_greedy_output_is_plain_decodings_in_mixed_batches_with_cache_hits(pair):
    plain, spec = pair
    prompts = [*GROUNDED, OPEN]
    params = [
        SamplingParams(temperature=0.0, max_tokens=40),
        SamplingParams(temperature=0.0, max_tokens=33),
        SamplingParams(temperature=0.0, max_tokens=40, logprobs=0),  # never speculates: a plain row beside the others
        SamplingParams(temperature=0.0, max_tokens=24),
    ]
    expected = _texts(plain.generate(prompts, params, use_tqdm=False))
    before = _spec_stats(spec)
    first = spec.generate(prompts, params, use_tqdm=False)
    drafts, proposed, accepted = (a - b for a, b in zip(_spec_stats(spec), before, strict=True))
    assert _texts(first) == expected
    assert accepted > 0 and drafts > 0 and proposed >= accepted
    # Again: the prompts' blocks now come from the prefix cache.
    again = spec.generate(prompts, params, use_tqdm=False)
    assert all(o.num_cached_tokens > 0 for o in again[:3])  # the open prompt is shorter than a block
    assert _texts(again) == expected
    assert spec.engine.stats()["blocks_in_use"] == 0


@pytest.mark.slow
def test_stop_strings_and_max_tokens_end_where_plain_decoding_ends(pair):
    plain, spec = pair
    greedy = SamplingParams(temperature=0.0, max_tokens=40)
    reference = [o.outputs[0].text for o in plain.generate(GROUNDED, greedy, use_tqdm=False)]
    # A stop string inside each expected text (a word well past its start), and short max_tokens.
    params = []
    for text in reference:
        words = [w for w in text.split() if len(w) > 2]
        params.append(SamplingParams(temperature=0.0, max_tokens=40, stop=[words[len(words) // 2]]))
    params += [SamplingParams(temperature=0.0, max_tokens=n) for n in (1, 2, 5)]
    prompts = GROUNDED + GROUNDED
    expected = _texts(plain.generate(prompts, params, use_tqdm=False))
    got = _texts(spec.generate(prompts, params, use_tqdm=False))
    assert got == expected
    assert [g[2] for g in got[:3]] == ["stop"] * 3
    assert [len(g[1]) for g in got[3:]] == [1, 2, 5]


def test_random_model_greedy_is_identical_up_to_the_context_limit():
    """A tiny random model repeats itself, so most steps speculate; it runs into max_model_len."""
    options = {"model": "random:tiny@3", "kv_cache_memory_bytes": 4 << 20, "max_model_len": 96, "block_size": 4}
    plain, spec = LLM(**options), LLM(**options, speculative="ngram:k=5,max_n=3,min_n=1")
    prompts = [[1 + (i * 7 + j) % 50 for j in range(5 + 9 * i)] for i in range(6)]
    params = SamplingParams(temperature=0.0, max_tokens=None, ignore_eos=True)
    expected = _texts(plain.generate(prompts, params, use_tqdm=False))
    got = _texts(spec.generate(prompts, params, use_tqdm=False))
    assert got == expected
    assert all(len(p) + len(g[1]) == 96 and g[2] == "length" for p, g in zip(prompts, got, strict=True))
    _, proposed, accepted = _spec_stats(spec)
    assert accepted > 0 and proposed > accepted
    assert spec.engine.stats()["blocks_in_use"] == 0


def test_sampled_output_follows_plain_sampling_per_position():
    """Per-position token distributions, speculating vs not, over many seeds: a few-token vocabulary
    (the others biased away) at a low temperature, so proposals are accepted and rejected often."""
    vocab = list(range(100, 106))
    bias = dict.fromkeys(vocab, 100.0)
    options = {"model": "random:tiny@1", "kv_cache_memory_bytes": 32 << 20, "max_model_len": 64, "max_num_seqs": 128}
    prompt = [vocab[i % 3] for i in range(12)] + [vocab[3], vocab[4], vocab[0], vocab[1]]
    n, length = 600, 5
    params = [
        SamplingParams(temperature=0.3, max_tokens=length, ignore_eos=True, logit_bias=bias, seed=s) for s in range(n)
    ]
    counts = {}
    for name, extra in (("plain", {}), ("spec", {"speculative": "ngram:k=4,max_n=3,min_n=1"})):
        llm = LLM(**options, **extra)
        outs = llm.generate([prompt] * n, params, use_tqdm=False)
        tokens = torch.tensor([o.outputs[0].token_ids for o in outs]) - vocab[0]
        assert tokens.min() >= 0 and tokens.max() < len(vocab)
        counts[name] = torch.stack([torch.bincount(tokens[:, j], minlength=len(vocab)) for j in range(length)]).float()
        if name == "spec":
            _, proposed, accepted = _spec_stats(llm)
            assert 0.1 * proposed < accepted < 0.9 * proposed, (proposed, accepted)
    # Two-sample chi-square per position (5 degrees of freedom): 30 is beyond the 99.99th percentile.
    for j in range(length):
        a, b = counts["plain"][j], counts["spec"][j]
        keep = (a + b) > 0
        chi2 = (((a - b) ** 2)[keep] / (a + b)[keep]).sum().item()
        assert chi2 < 30, (j, a.tolist(), b.tolist())


def test_aborts_mid_speculation_leak_no_blocks_and_the_engine_keeps_serving():
    llm = LLM(model="random:tiny@3", kv_cache_memory_bytes=4 << 20, max_model_len=256, speculative="ngram:k=4,min_n=1")
    engine = llm.engine
    prompts = [[1 + (i * 7 + j) % 50 for j in range(8 + 5 * i)] for i in range(5)]
    params = SamplingParams(temperature=0.0, max_tokens=200, ignore_eos=True)
    for i, prompt in enumerate(prompts):
        engine.add_request(f"r{i}", prompt, params)
    while engine.stats()["spec_decode_num_drafts"] < 10:
        engine.step()
    assert engine.stats()["blocks_in_use"] > 0
    for i in range(len(prompts)):
        engine.abort(f"r{i}")
    assert engine.stats()["blocks_in_use"] == 0
    assert engine.scheduler.kv.num_free == engine.scheduler.kv.num_blocks
    out = llm.generate([prompts[0]], SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True), use_tqdm=False)
    assert len(out[0].outputs[0].token_ids) == 20


def test_constrained_rows_beside_speculating_ones_keep_their_grammar():
    """Structured outputs decode one token at a time; their masks stay aligned with their rows."""
    from vivace.engine.structured.params import StructuredOutputsParams

    options = {"model": "random:tiny@3", "kv_cache_memory_bytes": 4 << 20, "max_model_len": 128}
    plain, spec = LLM(**options), LLM(**options, speculative="ngram:k=4,min_n=1")
    prompts = [[1 + (i * 7 + j) % 50 for j in range(12 + 5 * i)] for i in range(4)]
    choice = StructuredOutputsParams(choice=["red apple", "green pear", "blue plum"])
    params = [
        SamplingParams(temperature=0.0, max_tokens=30, ignore_eos=True),
        SamplingParams(temperature=0.0, max_tokens=20, structured_outputs=choice),
        SamplingParams(temperature=0.0, max_tokens=30, ignore_eos=True),
        SamplingParams(temperature=0.0, max_tokens=20, structured_outputs=choice),
    ]
    expected = _texts(plain.generate(prompts, params, use_tqdm=False))
    got = _texts(spec.generate(prompts, params, use_tqdm=False))
    assert got == expected
    assert got[1][0] in choice.choice and got[3][0] in choice.choice
    assert _spec_stats(spec)[2] > 0


def test_draft_model_greedy_is_identical_and_a_copy_of_the_target_is_always_accepted():
    options = {"model": "random:tiny@3", "kv_cache_memory_bytes": 4 << 20, "max_model_len": 128}
    prompts = [[1 + (i * 7 + j) % 50 for j in range(6 + 9 * i)] for i in range(3)]
    params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    expected = _texts(LLM(**options).generate(prompts, params, use_tqdm=False))
    other = LLM(**options, speculative="draft:random:tiny@5,k=3")  # another random model: often rejected
    assert _texts(other.generate(prompts, params, use_tqdm=False)) == expected
    _, proposed, accepted = _spec_stats(other)
    assert proposed > accepted
    same = LLM(**options, speculative="draft:random:tiny@3,k=3")  # the target itself: every token accepted
    assert _texts(same.generate(prompts, params, use_tqdm=False)) == expected
    drafts, proposed, accepted = _spec_stats(same)
    assert accepted == proposed > 0 and drafts <= 3 * 40 // 4 + 3
    assert same.engine.stats()["blocks_in_use"] == 0
