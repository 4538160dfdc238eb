"""Flows over a live server: GET /v1/flows, named SSE events from POST /v1/flows/{name}, disconnects."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.flows.conftest import wait_for_free_blocks

pytestmark = pytest.mark.slow


def read_events(lines):
    """(event name, decoded JSON) pairs from SSE lines, checking the wire format as it goes."""
    name, data = None, []
    for line in lines:
        if line == "":
            if name is not None or data:
                assert name is not None and len(data) == 1, (name, data)  # one data line per event
                yield name, json.loads(data[0])
            name, data = None, []
        elif line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            data.append(line[len("data: ") :])
        else:
            raise AssertionError(f"unexpected SSE line {line!r}")


def test_list_flows(served):
    body = httpx.get(f"{served.base_url}/v1/flows").json()
    by_name = {f["name"]: f for f in body["data"]}
    assert set(by_name) == {"recipe", "fanout"}
    assert [i["name"] for i in by_name["recipe"]["inputs"]] == ["on_hand", "prep_time"]
    assert {s["name"]: s["depends_on"] for s in by_name["fanout"]["steps"]}["d"] == ["b", "c"]


def test_run_streams_named_events_with_json_payloads(served):
    with httpx.stream(
        "POST", f"{served.base_url}/v1/flows/fanout", json={"inputs": {"topic": "rivers\nand lakes"}}, timeout=120
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(read_events(response.iter_lines()))
    names = [n for n, _ in events]
    assert names[0] == "step_started" and names[-1] == "flow_finished"
    assert set(names) == {"step_started", "delta", "step_finished", "flow_finished"}
    finished = {d["step"]: d for n, d in events if n == "step_finished" and d["index"] is None}
    assert set(finished) == set(served.flows["fanout"].steps)
    for step, data in finished.items():  # deltas joined == the finished text, newlines and all
        if served.flows["fanout"].steps[step].for_each is None:
            assert "".join(d["text"] for n, d in events if n == "delta" and d["step"] == step) == data["text"]
    items = sorted(
        (d for n, d in events if n == "step_finished" and d["step"] == "each" and d["index"] is not None),
        key=lambda d: d["index"],
    )
    assert [d["index"] for d in items] == [0, 1, 2]
    assert finished["each"]["value"] == [d["value"] for d in items]
    assert "\n" in finished["each"]["text"]  # the items' texts joined by newlines, decoded intact
    flow = events[-1][1]
    assert flow["ok"] is True and flow["wall_time"] > 0 and flow["step_time_sum"] >= flow["critical_path_time"] > 0


def test_text_with_newlines_survives_the_wire(served):
    # texts with newlines (the for_each step's joined text always has some) stay on one data line
    with httpx.stream("POST", f"{served.base_url}/v1/flows/fanout", json={"inputs": {}}, timeout=120) as response:
        raw = response.read().decode()
    for block in raw.strip().split("\n\n"):
        lines = block.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: ")
        json.loads(lines[1][len("data: ") :])


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/v1/flows/nope", {"inputs": {}}, 404, "flow 'nope' not found"),
        ("/v1/flows/fanout", {"inputs": {"bogus": "1"}}, 400, "has no input 'bogus'"),
        ("/v1/flows/fanout", {"inputs": {"topic": ["a"]}}, 400, "input 'topic' must be a string or number"),
        ("/v1/flows/fanout", {"inputs": "x"}, 400, "'inputs' must be an object"),
        ("/v1/flows/fanout", {"input": {}}, 400, 'the body must be {"inputs"'),
    ],
)
def test_bad_requests(served, path, body, status, message):
    response = httpx.post(f"{served.base_url}{path}", json=body)
    assert response.status_code == status
    assert message in response.json()["error"]["message"]


def test_invalid_json_body(served):
    response = httpx.post(
        f"{served.base_url}/v1/flows/fanout", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]


def test_client_disconnect_cancels_the_flow_and_frees_blocks(served):
    inputs = {"on_hand": "eggs, flour, milk, butter", "prep_time": "an hour"}
    with httpx.stream("POST", f"{served.base_url}/v1/flows/recipe", json={"inputs": inputs}, timeout=120) as response:
        deltas = 0
        for name, _ in read_events(response.iter_lines()):
            deltas += name == "delta"
            if deltas >= 3:
                break
        # No assertion on blocks in use here: the streaming step may have finished on that very token.
    assert wait_for_free_blocks(served.engine, timeout=10) == 0
    time.sleep(1.0)  # a flow that kept running would have started its next steps by now
    assert served.engine.stats()["blocks_in_use"] == 0
    assert served.engine.engine.num_requests == 0


def test_flow_page_is_served(served):
    page = httpx.get(f"{served.base_url}/flows/recipe")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert httpx.get(f"{served.base_url}/flows/nope").status_code == 404
    assert httpx.get(f"{served.base_url}/flows-static/flow.js").status_code == 200


def test_flow_routes_need_the_api_key_when_the_server_has_one(served):
    from tests.flows.conftest import _start
    from vivace.server.app import create_app

    server, thread, url = _start(create_app(served.engine, "keyed", api_key="k", flows=served.flows))
    try:
        assert httpx.get(f"{url}/v1/flows").status_code == 401
        assert httpx.post(f"{url}/v1/flows/fanout", json={"inputs": {}}).status_code == 401
        assert httpx.get(f"{url}/v1/flows", headers={"Authorization": "Bearer k"}).status_code == 200
        assert httpx.get(f"{url}/flows/recipe").status_code == 200  # the page is public; it asks for the key
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_flow_run_is_an_admitted_request(served):
    """It counts in flight while it streams, is refused when the server is full or draining."""
    from tests.flows.conftest import _start
    from vivace.server.app import create_app

    app = create_app(served.engine, "admission", flows=served.flows)
    state = app.state.server
    server, thread, url = _start(app)
    try:
        with httpx.stream("POST", f"{url}/v1/flows/fanout", json={"inputs": {}}, timeout=120) as response:
            events = read_events(response.iter_lines())
            assert next(events)[0] == "step_started"
            assert state.in_flight == 1
            assert httpx.get(f"{url}/metrics").text.count('vivace_requests_in_flight{model_name="admission"} 1.0') == 1
            assert [n for n, _ in events][-1] == "flow_finished"
        deadline = time.monotonic() + 5
        while state.in_flight and time.monotonic() < deadline:  # released when the response closes
            time.sleep(0.02)
        assert state.in_flight == 0

        state.admission.limit = state.admission.units = 1  # as if one sequence already filled it
        full = httpx.post(f"{url}/v1/flows/fanout", json={"inputs": {}})
        assert (
            full.status_code == 429 and full.json()["error"]["code"] == "queue_full" and "retry-after" in full.headers
        )
        state.admission.limit, state.admission.units, state.draining = None, 0, True
        draining = httpx.post(f"{url}/v1/flows/fanout", json={"inputs": {}})
        assert draining.status_code == 503 and draining.json()["error"]["code"] == "server_shutdown"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
