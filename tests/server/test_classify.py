"""POST /v1/classify: label probabilities from prompt scoring, through the real server."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.server.conftest import MODEL
from vivace.engine.classify_prompt import MAX_TEMPLATE_CHARS

pytestmark = pytest.mark.slow


def classify(server, body: dict) -> httpx.Response:
    return httpx.post(server.base_url + "/v1/classify", json={"model": MODEL, **body}, timeout=60)


def test_classify_returns_a_distribution(server):
    body = {"text": "I love this film, it was wonderful!", "labels": ["positive", "negative"]}
    reply = classify(server, body).json()
    probs = reply["probabilities"]
    assert set(probs) == {"positive", "negative"}
    assert sum(probs.values()) == pytest.approx(1.0)
    assert reply["label"] == max(probs, key=probs.get)
    assert reply["index"] == body["labels"].index(reply["label"])
    assert reply["usage"]["prompt_tokens"] > 0
    assert server.engine.stats()["blocks_in_use"] == 0


def test_classify_rejects_duplicate_labels(server):
    response = classify(server, {"text": "x", "labels": ["a", "a"]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "labels"


def test_llamba_shape_returns_the_chosen_index(server):
    options = ["Paris", "London", "Berlin"]
    body = {"prompt": "France is a country in Europe.", "question": "What is its capital?", "validResponses": options}
    reply = classify(server, body)
    assert reply.status_code == 200, reply.text
    reply = reply.json()
    assert list(reply["probabilities"]) == options
    assert sum(reply["probabilities"].values()) == pytest.approx(1.0)
    assert options[reply["index"]] == reply["label"] == max(options, key=reply["probabilities"].get)


def test_llamba_shape_errors_name_its_fields(server):
    response = classify(server, {"prompt": "x", "validResponses": ["a", "a"]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "validResponses"
    response = classify(server, {"question": "x?", "validResponses": ["a", "b"]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"
    response = classify(server, {"labels": ["a", "b"]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "text"


@pytest.mark.parametrize("template", ["{text:>1000000000}", "{text.__class__.__mro__}", "{", "{labels[0]} {0}"])
def test_hostile_templates_are_plain_text(server, template):
    started = time.monotonic()
    reply = classify(server, {"text": "good", "labels": ["yes", "no"], "template": template})
    assert reply.status_code == 200, reply.text
    # Taken literally, the template is a few tokens: no padded billion-character text was built.
    assert reply.json()["usage"]["prompt_tokens"] < 2 * 40
    assert time.monotonic() - started < 30


def test_template_size_is_capped(server):
    response = classify(server, {"text": "x", "labels": ["a", "b"], "template": "{text}" + " " * MAX_TEMPLATE_CHARS})
    assert response.status_code == 400 and response.json()["error"]["param"] == "template"
