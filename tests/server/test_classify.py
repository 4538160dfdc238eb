"""POST /v1/classify: label probabilities from prompt scoring, through the real server."""

from __future__ import annotations

import httpx
import pytest

from tests.server.conftest import MODEL

pytestmark = pytest.mark.slow


def test_classify_returns_a_distribution(server):
    body = {"model": MODEL, "text": "I love this film, it was wonderful!", "labels": ["positive", "negative"]}
    reply = httpx.post(server.base_url + "/v1/classify", json=body, timeout=60).json()
    probs = reply["probabilities"]
    assert set(probs) == {"positive", "negative"}
    assert sum(probs.values()) == pytest.approx(1.0)
    assert reply["label"] == max(probs, key=probs.get)
    assert reply["usage"]["prompt_tokens"] > 0
    assert server.engine.stats()["blocks_in_use"] == 0


def test_classify_rejects_duplicate_labels(server):
    body = {"model": MODEL, "text": "x", "labels": ["a", "a"]}
    response = httpx.post(server.base_url + "/v1/classify", json=body, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == "labels"
