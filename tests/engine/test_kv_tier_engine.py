"""The session KV tier on the packaged model: a conversation whose device blocks were evicted is restored from
the on-disk tier, with the same greedy output as recomputing it, and no block leaked."""

from __future__ import annotations

import pytest

from tests.conftest import make_test_llm
from vivace.engine.config import SamplingParams

pytestmark = pytest.mark.slow

# Eleven blocks of 16 tokens in float32.
KV_BYTES = 8 << 20
GREEDY = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
HISTORY = [{"role": "user", "content": "Tell me about the rivers of Europe, the Danube and the Rhine in particular."}]
PRESSURE = list(range(1000, 1160))  # with its answer, every block of the cache: the history is evicted


def conversation(**engine_options) -> tuple[list[str], int, dict, int]:
    """Turn 1, an unrelated prompt filling the cache, turn 2; (texts, turn 2's cached tokens, stats, blocks in use)."""
    llm = make_test_llm(kv_cache_memory_bytes=KV_BYTES, max_model_len=176, attention_backend="torch", **engine_options)
    first = llm.chat(HISTORY, GREEDY, use_tqdm=False)[0]
    llm.generate([PRESSURE], GREEDY, use_tqdm=False)
    turn2 = [*HISTORY, {"role": "assistant", "content": first.outputs[0].text}, {"role": "user", "content": "And?"}]
    second = llm.chat(turn2, GREEDY, use_tqdm=False)[0]
    stats, used = llm.engine.stats(), llm.engine.scheduler.kv.num_used
    llm.engine.close()
    return [first.outputs[0].text, second.outputs[0].text], second.num_cached_tokens, stats, used


def test_restored_from_disk_tier_matches_recompute(tmp_path) -> None:
    recomputed, cached_without, _, used_without = conversation()
    restored, cached_with, stats, used_with = conversation(kv_tier_bytes=64 << 20, kv_tier_path=str(tmp_path / "tier"))
    assert cached_without == 0  # the pressure really evicted the history
    assert cached_with >= 48 and stats["kv_tier_hits"] * 16 >= cached_with - 16
    assert stats["kv_tier_rejected"] == 0 and stats["kv_tier_stored_bytes"] > 0
    assert restored == recomputed
    assert used_without == used_with == 0


def test_an_int8_tier_is_fingerprinted_with_the_key_transform(monkeypatch: pytest.MonkeyPatch) -> None:
    """int8 key rows mean what the key transform makes them: a file written under another is not reused."""
    import vivace.engine.engine as engine_module
    from vivace.engine.llm import LLM

    options = dict(device="cpu", dtype="float32", quantization="none", kv_cache_memory_bytes=1 << 20, max_model_len=64)
    int8, bf16 = (LLM("random:tiny@0", kv_cache_dtype=d, **options).engine for d in ("int8", "bfloat16"))
    before = (int8._kv_fingerprint(), bf16._kv_fingerprint())
    monkeypatch.setattr(engine_module, "KEY_TRANSFORM", "another transform")
    assert int8._kv_fingerprint() != before[0]
    assert bf16._kv_fingerprint() == before[1]  # float caches hold the keys as they are
