"""Medusa heads: greedy output identical to plain decoding (packaged model and a tiny random one, beside
rows that do not speculate, with prefix-cache hits), no leaked KV blocks, `vivace train-medusa` end to
end on a tiny model, and clear errors for heads that are missing or belong to another model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import make_test_llm
from vivace import cli
from vivace.engine.config import InvalidParameterError, SamplingParams
from vivace.engine.llm import LLM
from vivace.engine.speculative.medusa_heads import CONFIG_FILE, WEIGHTS_FILE, MedusaConfig, save_medusa_heads

TINY = {"model": "random:tiny@3", "kv_cache_memory_bytes": 4 << 20, "max_model_len": 128, "block_size": 4}


def _texts(outputs) -> list[tuple[list[int], str | None]]:
    return [(o.outputs[0].token_ids, o.outputs[0].finish_reason) for o in outputs]


def _spec_stats(llm: LLM) -> tuple[int, int, int]:
    s = llm.engine.stats()
    return s["spec_decode_num_drafts"], s["spec_decode_num_draft_tokens"], s["spec_decode_num_accepted_tokens"]


def _random_heads(path: Path, llm: LLM, num_heads: int, scale: float, vocab: int | None = None) -> str:
    """Heads of random weights (scale 0: each head scores like the LM head) over the first `vocab` tokens."""
    cfg = llm.engine.model_config
    gen = torch.Generator().manual_seed(0)
    h = cfg.hidden_size
    weight = torch.randn(num_heads, h, h, generator=gen) * scale
    bias = torch.randn(num_heads, h, generator=gen) * scale
    config = MedusaConfig(num_heads, h, cfg.vocab_size, "test", {})
    save_medusa_heads(path, config, weight, bias, torch.arange(vocab or cfg.vocab_size))
    return str(path)


@pytest.mark.parametrize("tree", [16, 0], ids=["tree", "chain"])
@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_tiny_model_greedy_is_identical_beside_plain_rows_with_cache_hits_and_no_leaks(tmp_path, tree, backend):
    plain = LLM(**TINY)
    prompts = [[1 + (i * 7 + j) % 50 for j in range(5 + 9 * i)] for i in range(5)]
    params = [SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True) for _ in prompts]
    params[2] = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True, logprobs=0)  # never speculates
    expected = _texts(plain.generate(prompts, params, use_tqdm=False))
    for scale in (0.0, 0.05):  # heads that agree with the model often, and heads that rarely do
        heads = _random_heads(tmp_path / str(scale), plain, 3, scale)
        spec = LLM(**TINY, attention_backend=backend, speculative=f"medusa:{heads},tree={tree}")
        assert bool(spec.engine.proposer.choices) == (tree > 1)
        assert _texts(spec.generate(prompts, params, use_tqdm=False)) == expected
        again = spec.generate(prompts, params, use_tqdm=False)  # the prompts' blocks from the prefix cache
        assert all(o.num_cached_tokens > 0 for o in again[1:])
        assert _texts(again) == expected
        drafts, proposed, accepted = _spec_stats(spec)
        assert drafts > 0 and proposed >= accepted
        if scale == 0.0:
            assert accepted > 1.5 * drafts  # the tiny model repeats its last token: head k = LM head guesses it
        assert spec.engine.stats()["blocks_in_use"] == 0
        assert spec.engine.scheduler.kv.num_free == spec.engine.scheduler.kv.num_blocks


def test_tiny_model_reaches_the_context_limit_and_aborts_leak_nothing(tmp_path):
    options = {**TINY, "max_model_len": 64}
    plain = LLM(**options)
    spec = LLM(**options, speculative=f"medusa:{_random_heads(tmp_path, plain, 4, 0.0)},k=4")
    prompts = [[1 + (i * 5 + j) % 40 for j in range(3 + 11 * i)] for i in range(4)]
    params = SamplingParams(temperature=0.0, max_tokens=None, ignore_eos=True)
    got = _texts(spec.generate(prompts, params, use_tqdm=False))
    assert got == _texts(plain.generate(prompts, params, use_tqdm=False))
    assert all(len(p) + len(g[0]) == 64 and g[1] == "length" for p, g in zip(prompts, got, strict=True))
    engine = spec.engine
    for i, prompt in enumerate(prompts):
        engine.add_request(f"a{i}", prompt, SamplingParams(temperature=0.0, max_tokens=50, ignore_eos=True))
    while engine.stats()["spec_decode_num_drafts"] < 30:
        engine.step()
    for i in range(len(prompts)):
        engine.abort(f"a{i}")
    assert engine.stats()["blocks_in_use"] == 0
    assert not spec.engine.proposer._offers  # guesses of aborted sequences are dropped with them


@pytest.mark.slow
def test_packaged_model_greedy_is_identical_with_random_heads(tmp_path):
    plain = make_test_llm(max_model_len=512)
    heads = _random_heads(tmp_path, plain, 3, 0.02, vocab=4096)
    spec = make_test_llm(max_model_len=512, speculative=f"medusa:{heads}")
    conversations = [
        [{"role": "user", "content": "List the days of the week."}],
        [{"role": "user", "content": "Count from one to twenty in words."}],
        [{"role": "user", "content": "Tell me a story about a dragon."}],
    ]
    params = [SamplingParams(temperature=0.0, max_tokens=32), SamplingParams(temperature=0.0, max_tokens=24)]
    params.append(SamplingParams(temperature=0.0, max_tokens=16, logprobs=0))
    expected = _texts(plain.chat(conversations, params, use_tqdm=False))
    assert _texts(spec.chat(conversations, params, use_tqdm=False)) == expected
    assert _texts(spec.chat(conversations, params, use_tqdm=False)) == expected  # with prefix-cache hits
    assert _spec_stats(spec)[0] > 0
    assert spec.engine.stats()["blocks_in_use"] == 0


def test_train_medusa_runs_end_to_end_and_its_heads_load(tmp_path):
    """Distil from the tiny model on a prompt file; the heads learn its (repetitive) answers."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"say {w} {i}" for i, w in enumerate(["yes", "no", "maybe", "later"] * 3)))
    out = tmp_path / "heads"
    args = ["train-medusa", str(out), "-m", "random:tiny@3", "--prompts-file", str(prompts)]
    result = CliRunner().invoke(cli.app, [*args, "--max-tokens", "24", "--heads", "2", "--epochs", "3"])
    assert result.exit_code == 0, result.output
    assert f"medusa:{out}" in result.output
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["num_heads"] == 2 and config["trained_on"]["prompts"] == 12
    assert config["trained_on"]["positions"] > 12 * 10
    assert len(config["trained_on"]["held_out_top1_accuracy"]) == 2
    ranks = config["trained_on"]["held_out_rank_accuracy"]
    assert [head[0] for head in ranks] == config["trained_on"]["held_out_top1_accuracy"]
    assert all(0 <= sum(head) <= 1 for head in ranks)  # a label matches at most one rank
    options = {**TINY, "max_model_len": 256}
    plain, spec = LLM(**options), LLM(**options, speculative=f"medusa:{out}")
    conversations = [[{"role": "user", "content": line}] for line in prompts.read_text().splitlines()[:4]]
    params = SamplingParams(temperature=0.0, max_tokens=24)
    assert _texts(spec.chat(conversations, params, use_tqdm=False)) == _texts(
        plain.chat(conversations, params, use_tqdm=False)
    )
    assert _spec_stats(spec)[2] > 0  # trained on these answers, the heads guess some of them


def test_missing_or_mismatched_heads_are_clear_errors(tmp_path):
    with pytest.raises(InvalidParameterError) as err:
        LLM(**TINY, speculative=f"medusa:{tmp_path / 'nowhere'}")
    assert err.value.param == "speculative" and "no Medusa heads at" in str(err.value)
    other = MedusaConfig(2, 7, 100, "another model", {})
    save_medusa_heads(tmp_path / "other", other, torch.zeros(2, 7, 7), torch.zeros(2, 7), torch.arange(10))
    with pytest.raises(InvalidParameterError, match="hidden size 7 and vocabulary 100"):
        LLM(**TINY, speculative=f"medusa:{tmp_path / 'other'}")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / CONFIG_FILE).write_text("{}")
    (tmp_path / "broken" / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(InvalidParameterError, match="unreadable"):
        LLM(**TINY, speculative=f"medusa:{tmp_path / 'broken'}")
    args = ["generate", "1 2 3", "--no-chat", "-m", "random:tiny@3", "--speculative", f"medusa:{tmp_path / 'x'}"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 2 and "no Medusa heads at" in result.output
