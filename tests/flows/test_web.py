"""The recipe page in headless Chromium: the form runs the flow and each step's card fills as tokens stream."""

from __future__ import annotations

import json

import pytest

from tests.browser import chromium_page

pytestmark = pytest.mark.slow


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
        assert items.count() == 2  # one per ingredient on hand
        for i in range(2):
            assert items.nth(i).text_content() == texts.get(("nutrition", i), "")
        assert "critical path" in page.text_content("#summary")
        assert not errors, errors


def test_main_ui_links_to_the_recipe_page(served):
    with chromium_page() as page:
        page.goto(served.base_url + "/")
        page.click("#pages a[href='/flows/recipe']")
        page.wait_for_selector("body[data-ready=true]")
        assert page.text_content("#flow-title") == "recipe"
