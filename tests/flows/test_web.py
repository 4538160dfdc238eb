"""The flow pages in headless Chromium: the form runs the flow, each step's card fills as tokens stream, the
step graph and the timeline follow the events, the summary leads; at phone width, and in light and dark."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.browser import chromium_page

pytestmark = pytest.mark.slow


def _sse_events(raw: str) -> list[tuple[str, dict]]:
    """(event name, payload) of each SSE block of a flow run's response."""
    events = []
    for block in raw.strip().split("\n\n"):
        kind, data = (line.split(": ", 1)[1] for line in block.split("\n"))
        events.append((kind, json.loads(data)))
    return events


def _sse_texts(raw: str) -> tuple[dict[tuple[str, int | None], str], dict]:
    """Each (step, item)'s text joined from the delta events, and the flow_finished payload."""
    texts: dict[tuple[str, int | None], str] = {}
    finished = {}
    for block in raw.strip().split("\n\n"):
        kind, data = (line.split(": ", 1)[1] for line in block.split("\n"))
        payload = json.loads(data)
        if kind == "delta":
            key = (payload["step"], payload["index"])
            texts[key] = texts.get(key, "") + payload["text"]
        elif kind == "flow_finished":
            finished = payload
    return texts, finished


def test_recipe_page_fills_each_section_live(served):
    with chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{served.base_url}/flows/recipe")
        page.wait_for_selector("body[data-ready=true]")
        assert page.input_value("#input-on_hand") == "chicken, rice, spinach"  # the flow's defaults
        page.fill("#input-on_hand", "eggs, tomatoes")
        page.fill("#input-prep_time", "15 minutes")
        cards = page.locator("#steps .step")
        assert cards.evaluate_all("cs => cs.map(c => c.id)") == [
            f"step-{s}" for s in ("ideas", "pick", "ingredients", "intro", "nutrition", "sides", "steps")
        ]
        with page.expect_response(lambda r: r.url.endswith("/v1/flows/recipe")) as response_info:
            page.click("#run")
            # live: a card shows text while it is still running and the flow has not finished
            page.wait_for_function("""() => document.body.dataset.flow === 'running' &&
                [...document.querySelectorAll('.step[data-state=running] .out')].some(o => o.textContent.length)""")
            later = page.locator("#step-steps").get_attribute("data-state")
            assert later == "waiting"  # `steps` waits for `ingredients`
            page.wait_for_selector("body[data-flow=done]", timeout=300_000)
        texts, finished = _sse_texts(response_info.value.text())
        assert finished["ok"] is True
        assert page.locator(".step[data-state=done]").count() == 7
        for step in ("ideas", "pick", "ingredients", "intro", "sides", "steps"):
            shown = page.locator(f"#step-{step} .out").text_content()
            assert shown == texts.get((step, None), ""), step
        items = page.locator("#step-nutrition .out li")
        assert items.count() == 2  # one per ingredient on hand, each labelled with it
        assert page.locator("#step-nutrition .item-label").all_text_contents() == ["eggs", "tomatoes"]
        for i in range(2):
            assert items.nth(i).locator(".item-text").text_content() == texts.get(("nutrition", i), "")
        assert "critical path" in page.text_content("#summary")
        assert not errors, errors


def test_main_ui_links_to_the_recipe_page(served):
    with chromium_page() as page:
        page.goto(served.base_url + "/")
        page.wait_for_selector("#pages[data-flows]")
        links = page.locator("#pages li.flow a").evaluate_all("as => as.map(a => a.getAttribute('href'))")
        assert links == [f"/flows/{name}" for name in served.flows]  # every flow the server has, no other
        page.click("#pages a[href='/flows/recipe']")
        page.wait_for_selector("body[data-ready=true]")
        assert page.text_content("#flow-title") == "recipe"


def _overflow(page) -> list[int]:
    return page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")


def test_flow_page_draws_the_graph_a_live_timeline_and_the_summary_at_phone_width(served):
    """The fan-out flow at 390 px: graph edges are the dependencies, bars follow the events, nothing scrolls sideways."""
    described = {f["name"]: f for f in httpx.get(f"{served.base_url}/v1/flows").json()["data"]}["fanout"]
    needs = {s["name"]: s["depends_on"] for s in described["steps"]}
    with chromium_page(width=390, height=800) as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{served.base_url}/flows/fanout")
        page.wait_for_selector("body[data-ready=true]")
        width = _overflow(page)
        assert width[0] <= width[1], f"page is {width[0]}px wide in a {width[1]}px viewport"

        # The graph: a node per step, an edge per dependency, each step drawn below every step it needs.
        boxes = page.locator("#graph .node").evaluate_all(
            "ns => Object.fromEntries(ns.map(n => { const r = n.getBoundingClientRect();"
            " return [n.dataset.step, [r.top, r.bottom, r.left, r.right]]; }))"
        )
        assert set(boxes) == set(needs)
        edges = page.locator("#graph .edge").evaluate_all("es => es.map(e => [e.dataset.from, e.dataset.to])")
        assert sorted(map(tuple, edges)) == sorted((d, s) for s, deps in needs.items() for d in deps)
        for step, deps in needs.items():
            for dep in deps:
                assert boxes[step][0] > boxes[dep][1], (dep, step)
        graph_box = page.locator("#graph").bounding_box()
        assert graph_box["x"] >= 0 and graph_box["x"] + graph_box["width"] <= 390

        with page.expect_response(lambda r: r.url.endswith("/v1/flows/fanout")) as response_info:
            page.click("#run")
            # live: a running step's bar has grown while the flow is still running
            page.wait_for_function("""() => document.body.dataset.flow === 'running' &&
                [...document.querySelectorAll('.tl-bar[data-state=running]')].some(b => b.offsetWidth > 0)""")
            page.wait_for_selector("body[data-flow=done]", timeout=120_000)
        events = _sse_events(response_info.value.text())
        started = {(e["step"], e["index"]): e for kind, e in events if kind == "step_started"}
        finished = {(e["step"], e["index"]): e for kind, e in events if kind == "step_finished"}
        summary = next(e for kind, e in events if kind == "flow_finished")

        # The timeline: a bar per step and per item, from its start to its finish as the events said.
        bars = page.locator(".tl-row").evaluate_all(
            "rs => rs.map(r => { const b = r.querySelector('.tl-bar').getBoundingClientRect();"
            " return { step: r.dataset.step, index: r.dataset.index ?? null, label: r.querySelector('.tl-label').textContent,"
            " start: Number(r.querySelector('.tl-bar').dataset.start), end: Number(r.querySelector('.tl-bar').dataset.end),"
            " left: b.left, right: b.right }; })"
        )
        assert [b["label"] for b in bars if b["index"] is not None] == ["apples", "pears", "plums"]
        assert len(bars) == len(needs) + 3
        by_key = {(b["step"], None if b["index"] is None else int(b["index"])): b for b in bars}
        for key, bar in by_key.items():
            assert bar["start"] == pytest.approx(started[key]["at"], abs=1e-3), key
            assert bar["end"] == pytest.approx(finished[key]["finished_at"], abs=1e-3), key
            assert bar["right"] > bar["left"]
        for step, deps in needs.items():
            for dep in deps:  # a step's bar starts where its inputs' bars have ended
                assert by_key[(step, None)]["left"] >= by_key[(dep, None)]["right"] - 1, (dep, step)

        # The summary, at the top, from flow_finished; the graph marks the critical path.
        assert float(page.get_attribute("#summary", "data-wall")) == pytest.approx(summary["wall_time"])
        assert page.text_content("#sum-critical") == f"{summary['critical_path_time']:.2f} s"
        assert page.text_content("#sum-sequential") == f"{summary['step_time_sum']:.2f} s"
        assert " → ".join(summary["critical_path"]) in page.text_content("#sum-path")
        top = {sel: page.locator(sel).bounding_box()["y"] for sel in ("#summary", "#flow-form", "#graph", "#steps")}
        assert top["#summary"] < min(top[s] for s in ("#flow-form", "#graph", "#steps"))
        critical = page.locator("#graph .node.critical").evaluate_all("ns => ns.map(n => n.dataset.step)")
        assert sorted(critical) == sorted(summary["critical_path"])
        assert page.locator("#graph .node[data-state=done]").count() == len(needs)
        assert page.locator("#step-each .item-label").all_text_contents() == ["apples", "pears", "plums"]
        width = _overflow(page)
        assert width[0] <= width[1], f"after the run the page is {width[0]}px wide in a {width[1]}px viewport"
        assert not errors, errors


def _rgb(css: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"\d+", css)[:3])


def test_flow_page_has_the_playground_style_in_light_and_dark(served):
    """The flow page and the playground share colours, header and type, and both follow prefers-color-scheme."""
    looks = """() => { const s = (q) => getComputedStyle(document.querySelector(q));
        return [s('body').backgroundColor, s('body').color, s('body').fontFamily, s('header.top').backgroundColor,
                s('header.top').borderBottomColor, s('.brand').fontSize, s('button.primary').backgroundColor]; }"""
    with chromium_page() as page:
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            seen = {}
            for path in ("/", "/flows/recipe"):
                page.goto(served.base_url + path)
                page.wait_for_selector("body[data-ready=true]")
                seen[path] = page.evaluate(looks)
            assert seen["/"] == seen["/flows/recipe"], scheme
            background = sum(_rgb(seen["/"][0])) / 3
            assert background < 60 if scheme == "dark" else background > 200, (scheme, seen["/"][0])
            node = _rgb(page.locator("#graph .node rect").first.evaluate("r => getComputedStyle(r).fill"))
            assert (sum(node) / 3 < 80) if scheme == "dark" else (sum(node) / 3 > 200), (scheme, node)
