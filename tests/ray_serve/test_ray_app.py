"""The Ray Serve deployment end to end: real HTTP and the official openai client against the ingress,
two engine replicas of the packaged model (vivace/ray_serve/: ingress, replica, router, launch)."""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import GREEDY_MESSAGES, GREEDY_TOKENS
from tests.ray_serve.conftest import MODEL, REPLICAS, replica_names, wait_for

pytestmark = pytest.mark.slow

LONG = {"max_tokens": 300, "ignore_eos": True, "temperature": 0}


def _client(ray_served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{ray_served.base_url}/v1", api_key="unused", max_retries=0)


def _metric(base_url: str, sample: str, replica: str = "all", default: float | None = None, **labels: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and s.labels.get("replica") == replica and labels.items() <= s.labels.items():
                return s.value
    if default is not None:  # a labelled counter appears once it first counts
        return default
    raise AssertionError(f"{sample} (replica={replica}, {labels}) not in /metrics")


def _chat(base_url: str, messages: list[dict], **fields) -> httpx.Response:
    body = {"model": MODEL, "messages": messages, "max_tokens": 4, "temperature": 0, **fields}
    return httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=120)


def test_openai_client_chat_stream_and_models_as_the_single_process_server(ray_served, serving_engine):
    client = _client(ray_served)
    assert [m.id for m in client.models.list().data] == [MODEL]
    reference = serving_engine.offline["chat"].outputs[0].text  # the engine run offline, greedy
    reply = client.chat.completions.create(
        model=MODEL, messages=GREEDY_MESSAGES, max_tokens=GREEDY_TOKENS, temperature=0
    )
    assert reply.choices[0].message.content == reference
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=GREEDY_MESSAGES,
            max_tokens=GREEDY_TOKENS,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reference
    assert chunks[-1].usage.completion_tokens == GREEDY_TOKENS


def test_errors_are_the_apps_own(ray_served):
    bad = _chat(ray_served.base_url, GREEDY_MESSAGES, max_tokens=-1)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "max_tokens"
    missing = _chat(ray_served.base_url, GREEDY_MESSAGES, model="nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert (
        httpx.post(
            f"{ray_served.base_url}/v1/chat/completions",
            content=b"{",
            headers={"content-type": "application/json"},
            timeout=30,
        ).status_code
        == 400
    )


def test_a_session_and_a_growing_conversation_stay_on_their_replica(ray_served):
    replicas_seen = set()
    for session in ("alice", "bob", "carol"):
        served_by = {
            _chat(
                ray_served.base_url,
                [
                    {
                        "role": "user",
                        "content": f"Hello, I am {session}, and this is turn {turn} of a conversation long enough to be cached. "
                        * 2,
                    }
                ],
                user=session,
            ).headers["x-vivace-replica"]
            for turn in range(3)
        }
        assert len(served_by) == 1, f"session {session} moved between replicas: {served_by}"
        replicas_seen |= served_by
    assert len(replicas_seen) == REPLICAS  # new sessions spread over the idle replicas
    history = [{"role": "user", "content": "Tell me about the history of the bicycle, in detail. " * 6}]
    first = _chat(ray_served.base_url, history)
    for turn in range(3):
        history += [
            {"role": "assistant", "content": first.json()["choices"][0]["message"]["content"]},
            {"role": "user", "content": f"And then, part {turn}?"},
        ]
        again = _chat(ray_served.base_url, history)
        assert again.headers["x-vivace-replica"] == first.headers["x-vivace-replica"]


def test_metrics_per_replica_and_in_total(ray_served):
    _chat(ray_served.base_url, GREEDY_MESSAGES)
    per_replica = [
        _metric(ray_served.base_url, "vivace_prompt_tokens_total", replica=name.rsplit("#", 1)[1])
        for name in replica_names(ray_served.app_name)
    ]
    assert len(per_replica) == REPLICAS
    assert _metric(ray_served.base_url, "vivace_prompt_tokens_total") == sum(per_replica) > 0
    assert _metric(ray_served.base_url, "vivace_kv_blocks_total") > 0


def test_a_client_hanging_up_aborts_its_request_on_the_replica(ray_served):
    aborted_before = _metric(ray_served.base_url, "vivace_request_success_total", default=0, finished_reason="abort")
    body = {"model": MODEL, "messages": GREEDY_MESSAGES, "stream": True, **LONG}
    with httpx.stream("POST", f"{ray_served.base_url}/v1/chat/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
    wait_for(
        lambda: _metric(ray_served.base_url, "vivace_num_requests_running") == 0, 30, "the engine to drop the request"
    )
    wait_for(
        lambda: (
            _metric(ray_served.base_url, "vivace_request_success_total", default=0, finished_reason="abort")
            == aborted_before + 1
        ),
        30,
        "the abort to be counted",
    )
    assert _metric(ray_served.base_url, "vivace_requests_in_flight") == 0


def _stream_events(base_url: str, session: str, out: dict) -> None:
    """Stream one long chat as `session`, keeping its replica and every event (until the stream ends)."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Count, {session}."}],
        "stream": True,
        "user": session,
        **LONG,
    }
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body, timeout=180) as response:
        out["replica"] = response.headers["x-vivace-replica"]
        out["events"] = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                out["events"].append(line[6:])


def test_a_killed_replica_fails_its_streams_clearly_the_others_finish_and_ray_replaces_it(ray_served):
    import ray

    before = replica_names(ray_served.app_name)
    results = [{} for _ in range(4)]
    threads = [
        threading.Thread(target=_stream_events, args=(ray_served.base_url, f"kill-{i}", r))
        for i, r in enumerate(results)
    ]
    for t in threads:
        t.start()
    wait_for(lambda: all(len(r.get("events", [])) > 2 for r in results), 120, "every stream to be under way")
    by_replica = {r["replica"] for r in results}
    assert len(by_replica) == REPLICAS, "the four sessions should spread over both replicas"
    victim = results[0]["replica"]
    ray.kill(ray.get_actor(next(n for n in before if n.endswith("#" + victim)), namespace="serve"), no_restart=True)
    for t in threads:
        t.join(timeout=180)
    for r in results:
        last = json.loads(r["events"][-1]) if r["events"][-1] != "[DONE]" else None
        if r["replica"] == victim:
            assert last is not None and last["error"]["code"] == "replica_died", r["events"][-3:]
        else:  # the rest go on to the end, every token there
            assert r["events"][-1] == "[DONE]"
            chunks = [json.loads(e) for e in r["events"][:-1]]
            assert (
                sum(
                    1
                    for c in chunks
                    for ch in c["choices"]
                    if ch["delta"].get("content") is not None and ch.get("finish_reason") is None
                )
                >= 1
            )
            assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    wait_for(
        lambda: (
            len(replica_names(ray_served.app_name)) == REPLICAS
            and set(replica_names(ray_served.app_name)) != set(before)
        ),
        180,
        "Ray to start a new replica",
    )
    assert _chat(ray_served.base_url, GREEDY_MESSAGES, user="kill-0").status_code == 200  # the victim's session moved


def test_drain_finishes_or_aborts_what_runs_and_refuses_what_comes(ray_served):
    """Last: it leaves the ingress draining, as SIGTERM would before Serve shuts down."""
    from ray import serve

    result: dict = {}
    thread = threading.Thread(target=_stream_events, args=(ray_served.base_url, "drain", result))
    thread.start()
    wait_for(lambda: len(result.get("events", [])) > 2, 120, "the stream to be under way")
    aborted = serve.get_app_handle(ray_served.app_name).drain.remote(0.5).result(timeout_s=60)
    thread.join(timeout=60)
    assert aborted == 1
    assert json.loads(result["events"][-1])["error"]["code"] == "server_shutdown"
    refused = _chat(ray_served.base_url, GREEDY_MESSAGES)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "server_shutdown"
    assert httpx.get(f"{ray_served.base_url}/health", timeout=30).status_code == 503
