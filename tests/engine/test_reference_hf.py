"""The engine against HF transformers loading the same GGUF: logits and greedy continuations.

Each test runs on two kernel sets: "torch", the reference path (asserted to call no compiled
extension op), and "cpu", the C++ ops the CPU engine runs by default.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from types import ModuleType

import pytest
import torch

from vivace.engine.config import SamplingParams
from vivace.engine.cpu_ops import load_cpu_ops
from vivace.engine.llm import LLM

pytestmark = pytest.mark.slow
KERNEL_SETS = ["torch", "cpu"]

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a short story about a robot who learns to paint."}],
    [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "List three prime numbers."},
        {"role": "assistant", "content": "2, 3, 5."},
        {"role": "user", "content": "Three more, please, and explain why they are prime."},
    ],
]
RAW = ["The quick brown fox", "def fibonacci(n):\n    ", "Les mots français: été, où, garçon —"]


@pytest.fixture(scope="module")
def extension_calls() -> Iterator[Counter]:
    """Every call into the compiled CPU ops module, counted by op, for engines built in this module."""
    ops = load_cpu_ops()
    calls: Counter = Counter()
    saved = _spy_on(ops, calls) if ops is not None else {}
    yield calls
    for name, fn in saved.items():
        setattr(ops, name, fn)


def _spy_on(ops: ModuleType, calls: Counter) -> dict:
    saved = {name: getattr(ops, name) for name in dir(ops) if not name.startswith("_") and callable(getattr(ops, name))}

    def spy(name: str, fn):
        def counted(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return counted

    for name, fn in saved.items():
        setattr(ops, name, spy(name, fn))
    return saved


@pytest.fixture(scope="module")
def engines(extension_calls: Counter) -> dict[str, LLM]:
    """The packaged model in float32 on each kernel set, built after the spy is in place."""
    built = {"torch": LLM(kv_cache_memory_bytes=64 << 20, quantization="none", attention_backend="torch")}
    if load_cpu_ops() is not None:
        built["cpu"] = LLM(kv_cache_memory_bytes=64 << 20, quantization="none", attention_backend="cpu")
    return built


@pytest.fixture(params=KERNEL_SETS)
def llm(request: pytest.FixtureRequest, engines: dict[str, LLM], extension_calls: Counter) -> Iterator[LLM]:
    if request.param not in engines:
        pytest.skip("the C++ CPU ops are not built here")
    before = sum(extension_calls.values())
    yield engines[request.param]
    ran = sum(extension_calls.values()) - before
    if request.param == "torch":
        assert ran == 0, f"the reference path called compiled ops: {extension_calls}"
    else:
        assert ran > 0, "the cpu kernel set ran no compiled op (is the spy blind?)"


def _prompt_ids(llm, item) -> list[int]:
    if isinstance(item, str):
        return llm.engine.tokenize_prompt(item)
    return llm.tokenizer.encode_chat(item)


def _vivace_prefill_logits(llm, ids: list[int]) -> tuple[int, torch.Tensor]:
    """Logits of one engine prefill (scheduler -> runner -> model) and the first position computed.

    Positions before it came from the prefix cache (blocks shared with earlier prompts).
    """
    engine = llm.engine
    engine.add_request("ref-logits", ids, SamplingParams(max_tokens=1))
    batch = engine.scheduler.schedule()
    try:
        assert [item.seq.request_id for item in batch.prefills] == ["ref-logits"]
        with torch.inference_mode():
            inputs = engine.runner.prepare_inputs(batch)
            hidden = engine.model.forward(
                inputs.input_ids, inputs.positions, inputs.attn_metadata, engine.runner.kv_cache
            )
            return batch.prefills[0].start, engine.model.compute_logits(hidden)
    finally:
        engine.abort("ref-logits")


@pytest.mark.parametrize(
    "item", CHATS + RAW, ids=[f"chat{i}" for i in range(len(CHATS))] + [f"raw{i}" for i in range(len(RAW))]
)
def test_prefill_logits_match_transformers(llm, hf_model, item) -> None:
    ids = _prompt_ids(llm, item)
    start, ours = _vivace_prefill_logits(llm, ids)
    with torch.inference_mode():
        theirs = hf_model(torch.tensor([ids])).logits[0, start:].float()
    assert ours.shape == theirs.shape
    diff = (ours - theirs).abs().max().item()
    assert diff < 2e-3, f"max |logit difference| {diff}"
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_greedy_continuations_match_transformers(llm, hf_model) -> None:
    prompts = [_prompt_ids(llm, item) for item in CHATS + RAW[:2]]
    params = SamplingParams(temperature=0.0, max_tokens=64, ignore_eos=True)
    ours = llm.generate(prompts, params)  # batched together: decodes and prefills share steps
    for ids, out in zip(prompts, ours, strict=True):
        with torch.inference_mode():
            ref = hf_model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False,
                max_new_tokens=64,
                eos_token_id=None,
                pad_token_id=0,
            )[0, len(ids) :].tolist()
        assert out.outputs[0].token_ids == ref
        assert len(ref) == 64
    assert llm.engine.scheduler.kv.num_used == 0


def _check_prompt_logprobs(prompt_logprobs, ids: list[int], reference: torch.Tensor, k: int) -> None:
    """Each scored prompt token against log_softmax of transformers' logits at the position before it."""
    assert [lp.token_id for lp in prompt_logprobs] == ids[1:]
    for position, lp in enumerate(prompt_logprobs, start=1):
        row = reference[position - 1]
        assert abs(lp.logprob - row[ids[position]].item()) < 2e-3
        assert lp.rank == int((row > row[ids[position]]).sum()) + 1
        top_ids = [t for t, _ in lp.top]
        assert len(top_ids) == k
        assert top_ids[0] == int(row.argmax())
        assert set(top_ids) <= set(row.topk(k + 2).indices.tolist())  # near-ties may swap at the edge


def test_prompt_logprobs_match_transformers(llm, hf_model) -> None:
    """SamplingParams(prompt_logprobs=k): every prompt token's logprob, rank and top-k, as vLLM returns them."""
    ids = _prompt_ids(llm, CHATS[2])
    llm.engine.scheduler.kv.reset_prefix_cache()
    out = llm.generate([ids], SamplingParams(max_tokens=1, prompt_logprobs=3))[0]
    with torch.inference_mode():
        reference = torch.log_softmax(hf_model(torch.tensor([ids])).logits[0].float(), dim=-1)
    _check_prompt_logprobs(out.prompt_logprobs, ids, reference, 3)


def test_prompt_logprobs_across_chunks_and_a_cached_prefix(hf_model) -> None:
    """A prompt prefilled in chunks, whose prefix is also in the prefix cache, is still scored whole."""
    llm = LLM(kv_cache_memory_bytes=64 << 20, quantization="none", attention_backend="torch", max_num_batched_tokens=16)
    ids = _prompt_ids(llm, CHATS[2])
    assert len(ids) > 3 * 16
    llm.generate([ids], SamplingParams(max_tokens=1))  # puts the prompt's blocks in the prefix cache
    out = llm.generate([ids], SamplingParams(max_tokens=1, prompt_logprobs=1))[0]
    with torch.inference_mode():
        reference = torch.log_softmax(hf_model(torch.tensor([ids])).logits[0].float(), dim=-1)
    _check_prompt_logprobs(out.prompt_logprobs, ids, reference, 1)
    assert out.num_cached_tokens == 0  # scored tokens need their logits: nothing reused
    assert llm.engine.scheduler.kv.num_used == 0
