"""/metrics of a server whose engine speculates: the spec-decode counters move with real requests."""

from __future__ import annotations

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from tests.live_server import start_uvicorn, stop_uvicorn


def _scrape(base_url: str) -> dict[str, float]:
    text = httpx.get(base_url + "/metrics", timeout=30).text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_metrics_show_proposed_and_accepted_tokens():
    from vivace.engine.async_engine import AsyncEngine
    from vivace.engine.config import EngineConfig
    from vivace.server.app import create_app

    config = EngineConfig(
        model="random:tiny@3", kv_cache_memory_bytes=4 << 20, max_model_len=256, speculative="ngram:k=4,min_n=1"
    )
    engine = AsyncEngine.from_config(config)
    server, thread, base_url = start_uvicorn(create_app(engine, "tiny-spec"))
    try:
        before = _scrape(base_url)
        assert before["vivace_spec_decode_num_drafts_total"] == 0
        assert before["vivace_spec_decode_mean_acceptance_length"] == 0
        client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused")
        prompt = [1 + j % 7 for j in range(30)]  # a repeating prompt: the tiny model's output repeats too
        completion = client.completions.create(
            model="tiny-spec", prompt=prompt, max_tokens=60, temperature=0, extra_body={"ignore_eos": True}
        )
        assert completion.usage.completion_tokens == 60
        after = _scrape(base_url)
        drafts = after["vivace_spec_decode_num_drafts_total"]
        proposed = after["vivace_spec_decode_num_draft_tokens_total"]
        accepted = after["vivace_spec_decode_num_accepted_tokens_total"]
        assert drafts > 0 and proposed >= accepted > 0
        assert after["vivace_spec_decode_mean_acceptance_length"] == 1 + accepted / drafts
        # Every step emits at least one token: fewer steps than tokens is what speculation bought.
        assert engine.stats()["steps"] < 60
    finally:
        stop_uvicorn(server, thread)
        engine.shutdown()
