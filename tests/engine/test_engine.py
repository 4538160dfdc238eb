"""LLMEngine / LLM on the packaged model: batching, prefix reuse, sampling options, aborts, errors."""

from __future__ import annotations

import pytest
import torch

from vivace.engine.config import InvalidParameterError, SamplingParams
from vivace.engine.kernels.block_quant import Q4_1, Q8_0, dequantize_blocks
from vivace.engine.llm import LLM
from vivace.engine.models.blocks import embed_rows
from vivace.engine.models.linear import BlockQuantLinear
from vivace.engine.scheduler import RequestTooLargeError

pytestmark = pytest.mark.slow

GREEDY = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)
DOC = (
    "The river Thames flows through southern England, including London. It rises at Thames Head in "
    "Gloucestershire and flows into the North Sea near Tilbury, Essex. Its tidal section reaches up to "
    "Teddington Lock. The river is about 346 km long, the longest in England. "
) * 2


def blocks_in_use(llm: LLM) -> int:
    return llm.engine.scheduler.kv.num_used


def one_by_one(llm: LLM, prompts: list, params: SamplingParams) -> list[list[int]]:
    """Reference: each prompt alone, with nothing reused from earlier prompts."""
    outs = []
    for p in prompts:
        llm.engine.scheduler.kv.reset_prefix_cache()
        outs.append(llm.generate([p], params)[0].outputs[0].token_ids)
    return outs


def test_batched_equals_one_by_one(llm: LLM) -> None:
    prompts = ["Hello, my name is", "The capital of Italy is", "1, 2, 3, 4,", "Once upon a time in a land far away"]
    expected = one_by_one(llm, prompts, GREEDY)
    got = [o.outputs[0].token_ids for o in llm.generate(prompts, GREEDY)]
    assert got == expected
    assert blocks_in_use(llm) == 0


def test_same_step_requests_share_a_long_prefix(llm: LLM) -> None:
    questions = ["How long is it?", "Where does it rise?", "Where does it end?", "Which city?", "Is it tidal?"]
    prompts = [f"{DOC}\nQuestion: {q}\nAnswer:" for q in questions]
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    expected = one_by_one(llm, prompts, params)
    llm.engine.scheduler.kv.reset_prefix_cache()
    before = llm.engine.stats()
    got = [o.outputs[0].token_ids for o in llm.generate(prompts, params)]
    after = llm.engine.stats()
    assert got == expected
    ids = [llm.engine.tokenize_prompt(p) for p in prompts]
    shared = len(ids[0])
    for other in ids[1:]:
        shared = next(
            i
            for i, (a, b) in enumerate(zip(ids[0], other + [-1], strict=True))
            if a != b or i == min(shared, len(other))
        )
    computed = after["prompt_tokens_computed"] - before["prompt_tokens_computed"]
    total = sum(len(i) for i in ids)
    block = llm.engine.config.block_size
    # The shared prefix is computed once: every other request computes at most its own tail
    # plus the partly shared block.
    assert computed <= total - (len(prompts) - 1) * (shared // block) * block
    assert (
        after["prompt_tokens_reused"] - before["prompt_tokens_reused"] >= (len(prompts) - 1) * (shared // block) * block
    )
    assert blocks_in_use(llm) == 0


def test_abort_frees_everything(llm: LLM) -> None:
    engine = llm.engine
    for i in range(4):
        engine.add_request(f"abort-{i}", DOC + str(i), SamplingParams(max_tokens=50))
    engine.step()  # some prefill
    engine.step()
    assert blocks_in_use(llm) > 0
    for i in range(4):
        out = engine.abort(f"abort-{i}")
        assert out is not None and out.outputs[0].finish_reason == "abort"
    assert blocks_in_use(llm) == 0 and not engine.has_unfinished_requests()
    assert engine.abort("abort-0") is None


def test_stream_deltas_concatenate_to_text(llm: LLM) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=30)
    deltas = []
    final = None
    for out in llm.stream_chat([{"role": "user", "content": "Say something in French with accents."}], params):
        deltas.append(out.outputs[0].delta)
        final = out
    assert final is not None and final.finished
    text = final.outputs[0].text
    assert "".join(deltas) == text
    assert text == llm.tokenizer.decode(
        [t for t in final.outputs[0].token_ids if t not in llm.engine.eos_token_ids], skip_special_tokens=True
    )


def test_offline_text_decoded_at_the_end_equals_the_streamed_text(llm: LLM) -> None:
    """Offline requests without stop strings decode once when they finish, to the same text."""
    messages = [{"role": "user", "content": "Say something in French with accents."}]
    params = SamplingParams(temperature=0.0, max_tokens=30)
    streamed = list(llm.stream_chat(messages, params))[-1].outputs[0]
    offline = llm.chat(messages, params)[0].outputs[0]
    assert offline.token_ids == streamed.token_ids and offline.text == streamed.text
    # Aborted before the end, a deferred request still reports the text of its tokens so far.
    engine = llm.engine
    engine.add_request("deferred", DOC, SamplingParams(temperature=0.0, max_tokens=50), stream=False)
    for _ in range(6):  # a prefill step, then five decode steps
        assert engine.step() == []  # nothing is reported before the end
    out = engine.abort("deferred").outputs[0]
    assert len(out.token_ids) >= 5 and out.text == llm.tokenizer.decode(out.token_ids)
    assert blocks_in_use(llm) == 0


def test_stop_strings_end_the_text_and_are_not_emitted(llm: LLM) -> None:
    prompt = "List the days of the week: Monday, Tuesday,"
    ref = llm.generate([prompt], GREEDY)[0].outputs[0].text
    stop = ref[len(ref) // 3 : len(ref) // 3 + 3]
    assert stop.strip()
    out = llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True, stop=[stop]))[0]
    assert out.outputs[0].text == ref[: ref.index(stop)]
    assert out.outputs[0].finish_reason == "stop" and out.outputs[0].stop_reason == stop
    assert blocks_in_use(llm) == 0


def test_stop_token_ids_max_tokens_and_min_tokens(llm: LLM) -> None:
    ref = llm.generate(["Count: one, two, three,"], GREEDY)[0].outputs[0].token_ids
    out = llm.generate(
        ["Count: one, two, three,"], SamplingParams(temperature=0.0, max_tokens=24, stop_token_ids=[ref[5]])
    )[0]
    assert out.outputs[0].token_ids == ref[: ref.index(ref[5]) + 1]
    assert out.outputs[0].finish_reason == "stop" and out.outputs[0].stop_reason == ref[5]
    out = llm.generate(["Count: one, two, three,"], SamplingParams(temperature=0.0, max_tokens=7, ignore_eos=True))[0]
    assert len(out.outputs[0].token_ids) == 7 and out.outputs[0].finish_reason == "length"
    chat = llm.chat([{"role": "user", "content": "What is 2+2?"}], SamplingParams(temperature=0.0, max_tokens=64))[0]
    natural = len(chat.outputs[0].token_ids)
    assert chat.outputs[0].finish_reason == "stop" and natural < 64
    longer = llm.chat(
        [{"role": "user", "content": "What is 2+2?"}],
        SamplingParams(temperature=0.0, max_tokens=64, min_tokens=natural + 5),
    )[0]
    assert len(longer.outputs[0].token_ids) >= natural + 5


def test_seed_gives_same_output_whatever_else_is_in_the_batch(llm: LLM) -> None:
    seeded = SamplingParams(temperature=1.0, top_p=0.95, seed=1234, max_tokens=20, ignore_eos=True)
    alone = llm.generate(["Tell me a joke."], seeded)[0].outputs[0].token_ids
    others = [SamplingParams(temperature=1.3, max_tokens=15, ignore_eos=True)] * 3
    mixed = llm.generate(
        ["Why is the sky blue?", "Tell me a joke.", "Hi", "Write a poem."], [others[0], seeded, others[1], others[2]]
    )
    assert mixed[1].outputs[0].token_ids == alone
    different = llm.generate(
        ["Tell me a joke."], SamplingParams(temperature=1.0, top_p=0.95, seed=99, max_tokens=20, ignore_eos=True)
    )
    assert different[0].outputs[0].token_ids != alone


def test_n_choices_share_the_prompt(llm: LLM) -> None:
    llm.engine.scheduler.kv.reset_prefix_cache()
    before = llm.engine.stats()
    params = SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=12, ignore_eos=True)
    out = llm.generate([DOC + "\nSummary:"], params)[0]
    after = llm.engine.stats()
    assert [o.index for o in out.outputs] == [0, 1, 2]
    assert len({tuple(o.token_ids) for o in out.outputs}) > 1
    prompt_len = len(out.prompt_token_ids)
    computed = after["prompt_tokens_computed"] - before["prompt_tokens_computed"]
    assert computed < prompt_len + 2 * llm.engine.config.block_size  # siblings compute only the tail
    assert blocks_in_use(llm) == 0


def test_decode_logprobs_agree_with_prefill_scores(llm: LLM) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True, logprobs=3)
    out = llm.generate(["The weather today is"], params)[0]
    comp = out.outputs[0]
    assert len(comp.logprobs) == 10
    for lp in comp.logprobs:
        assert len(lp.top) == 3
        assert lp.token_id == lp.top[0][0] and abs(lp.logprob - lp.top[0][1]) < 1e-5  # greedy = top-1
        assert [v for _, v in lp.top] == sorted((v for _, v in lp.top), reverse=True)
    # Score the prompt + generated tokens through the prefill path: same log-probabilities.
    engine = llm.engine
    ids = out.prompt_token_ids + comp.token_ids
    engine.scheduler.kv.reset_prefix_cache()
    engine.add_request("score", ids, SamplingParams(max_tokens=1), stream=False, score_from=len(out.prompt_token_ids))
    scored = None
    while scored is None:
        for o in engine.step():
            scored = o
    assert torch.allclose(
        torch.tensor([lp.logprob for lp in scored.prompt_logprobs]),
        torch.tensor([lp.logprob for lp in comp.logprobs]),
        atol=1e-3,
    )


def test_classify_shares_prefix_and_matches_independent_scoring(llm: LLM) -> None:
    labels = ["positive", "negative", "neutral"]
    text = "I absolutely loved this film, the acting was wonderful and I would watch it again."
    llm.engine.scheduler.kv.reset_prefix_cache()
    before = llm.engine.stats()
    probs = llm.classify(text, labels)
    after = llm.engine.stats()
    assert set(probs) == set(labels) and abs(sum(probs.values()) - 1.0) < 1e-6
    assert max(probs, key=probs.get) == "positive"
    assert after["prompt_tokens_reused"] > before["prompt_tokens_reused"]
    # Independent reference: each label scored alone with an empty prefix cache.
    from vivace.engine.classify import classify_requests, label_probabilities

    scores = []
    for ids, first in classify_requests(llm.tokenizer, text, labels, None):
        llm.engine.scheduler.kv.reset_prefix_cache()
        llm.engine.add_request("solo", ids, SamplingParams(max_tokens=1), stream=False, score_from=first)
        res = None
        while res is None:
            for o in llm.engine.step():
                res = o
        assert len(res.prompt_logprobs) == len(ids) - first
        scores.append([lp.logprob for lp in res.prompt_logprobs])
    reference = label_probabilities(labels, scores)
    for label in labels:
        assert abs(reference[label] - probs[label]) < 1e-3


def test_bad_requests_raise_and_engine_keeps_serving(llm: LLM) -> None:
    engine = llm.engine
    with pytest.raises(InvalidParameterError, match="prompt"):
        engine.add_request("bad1", "", SamplingParams())
    with pytest.raises(InvalidParameterError, match="token ids"):
        engine.add_request("bad2", [1, 2, 10**9], SamplingParams())
    with pytest.raises(RequestTooLargeError, match="tokens"):
        engine.add_request("bad3", [5] * (engine.max_model_len + 3), SamplingParams())
    with pytest.raises(InvalidParameterError, match="logit_bias"):
        engine.add_request("bad4", "hi", SamplingParams(logit_bias={10**9: 1.0}))
    with pytest.raises(InvalidParameterError, match="temperature"):
        SamplingParams(temperature=-1)
    for seed in (-(2**63) - 1, 2**64):  # found by the server fuzz test: a 500 from torch's manual_seed
        with pytest.raises(InvalidParameterError, match="seed: must fit in 64 bits"):
            SamplingParams(seed=seed)
    for seed in (-(2**63), 2**64 - 1):  # the edges are valid seeds
        engine.add_request(f"edge{seed}", "hi", SamplingParams(seed=seed, max_tokens=1))
        engine.abort(f"edge{seed}")
    assert not engine.has_unfinished_requests() and blocks_in_use(llm) == 0
    # validate_request gives the same verdicts without queueing anything.
    assert engine.validate_request("hi", SamplingParams()) == engine.tokenize_prompt("hi")
    with pytest.raises(RequestTooLargeError):
        engine.validate_request([5] * (engine.max_model_len + 3), SamplingParams())
    assert not engine.has_unfinished_requests()
    assert llm.generate(["Still alive?"], SamplingParams(max_tokens=3))[0].outputs[0].token_ids


def test_preemption_and_chunked_prefill_with_a_tiny_cache_lose_nothing(llm: LLM) -> None:
    prompts = [f"Story number {i}: once upon a time" for i in range(6)]
    params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    expected = [o.outputs[0].token_ids for o in llm.generate(prompts, params)]
    small = LLM(
        kv_cache_memory_bytes=16 * llm.engine.model.kv_bytes_per_token(llm.engine.kv_dtype) * 12,
        quantization="none",
        max_num_batched_tokens=16,  # prompts of ~9 tokens: most prefills are split across steps
    )
    assert small.engine.scheduler.kv.num_blocks == 12  # 192 tokens for 6 x ~50
    got = [o.outputs[0].token_ids for o in small.generate(prompts, params)]
    assert got == expected
    assert small.engine.stats()["preemptions"] > 0
    assert small.engine.scheduler.kv.num_used == 0
    with pytest.raises(RequestTooLargeError, match="blocks"):
        small.generate(["x"], SamplingParams(max_tokens=500))


def test_default_cpu_mode_is_batch_and_cache_invariant() -> None:
    """The GGUF's own 4-bit blocks with activations quantized per row and a float16 KV cache (the
    CPU default): a request's greedy output does not depend on its batch-mates or on prefix reuse."""
    fast = LLM(kv_cache_memory_bytes=64 << 20)
    assert fast.engine.config.resolved_quantization == "gguf"
    model = fast.engine.model
    # Q4_1 layers and the Q8_0 tied head are computed on the file's blocks, none re-quantized to int8.
    assert isinstance(model.lm_head, BlockQuantLinear) and model.lm_head.qtype == Q8_0
    assert isinstance(model.layers[0].mlp.gate_up, BlockQuantLinear) and model.layers[0].mlp.gate_up.qtype == Q4_1
    # Tied: the embedding lookups read the head's blocks (in the kernel's own layout when compiled).
    assert model.embed is model.lm_head
    ids = torch.tensor([0, 7, 8, 12345, 49151, 7])
    assert torch.equal(embed_rows(model.embed, ids, torch.float32), dequantize_blocks(model.lm_head.blocks)[ids])
    assert fast.engine.kv_dtype == torch.float16
    params = SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True)
    prompt = DOC + "\nIn one sentence, the Thames is"
    alone = fast.generate([prompt], params)[0].outputs[0].token_ids  # computes the whole prompt
    again = fast.generate([prompt], params)[0].outputs[0].token_ids  # reuses its cached blocks
    mixed = fast.generate(["Hi there", prompt, "Tell me about the sea. " * 20], params)[1].outputs[0].token_ids
    assert alone == again == mixed
    assert fast.engine.stats()["prompt_tokens_reused"] > 0
    # Short chats whose tail after the cached blocks is a token or two (a case that once differed).
    chat_params = SamplingParams(temperature=0.0, max_tokens=30)
    for question in ["Name some colours.", "Write a poem about the sea.", "Explain gravity to a child."]:
        chat = [{"role": "user", "content": question}]
        first = fast.chat(chat, chat_params)[0].outputs[0].token_ids
        assert fast.chat(chat, chat_params)[0].outputs[0].token_ids == first
