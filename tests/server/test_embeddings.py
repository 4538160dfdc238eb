"""/v1/embeddings over real HTTP: float and base64 encodings, the openai SDK, usage, errors naming the field."""

from __future__ import annotations

import base64
import time

import httpx
import numpy as np
import openai
import pytest

from tests.server.conftest import MODEL

pytestmark = pytest.mark.slow

TEXTS = ["The cat sat on the mat.", "Quantum chromodynamics", "The cat sat on the mat."]


def post(server, body: dict) -> httpx.Response:
    return httpx.post(server.base_url + "/v1/embeddings", json=body, timeout=120)


def test_float_embeddings_shape_norm_and_usage(server):
    response = post(server, {"model": MODEL, "input": TEXTS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == MODEL
    vectors = [np.array(d["embedding"]) for d in body["data"]]
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    hidden = server.engine.engine.model_config.hidden_size
    assert all(v.shape == (hidden,) and abs(np.linalg.norm(v) - 1) < 1e-5 for v in vectors)
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)  # same text, same vector
    assert float(vectors[0] @ vectors[1]) < 0.999  # different texts differ
    counts = [httpx.post(server.base_url + "/tokenize", json={"prompt": t}).json()["count"] for t in TEXTS]
    assert body["usage"] == {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}


def test_base64_is_little_endian_float32_of_the_same_vector(server):
    floats = post(server, {"input": TEXTS[1]}).json()["data"][0]["embedding"]
    encoded = post(server, {"input": TEXTS[1], "encoding_format": "base64"}).json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(encoded), dtype="<f4")
    np.testing.assert_allclose(decoded, np.array(floats, dtype=np.float32), atol=1e-6)


def test_token_ids_and_text_inputs_agree(server):
    ids = httpx.post(server.base_url + "/tokenize", json={"prompt": TEXTS[0]}).json()["tokens"]
    by_text = post(server, {"input": TEXTS[0]}).json()["data"][0]["embedding"]
    by_ids = post(server, {"input": [ids, ids]}).json()["data"]
    assert len(by_ids) == 2
    np.testing.assert_allclose(by_ids[0]["embedding"], by_text, atol=1e-6)


def test_openai_sdk(server):
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused")
    result = client.embeddings.create(model=MODEL, input=TEXTS[:2])  # the SDK asks for base64 and decodes it
    floats = post(server, {"input": TEXTS[:2]}).json()["data"]
    for got, expected in zip(result.data, floats, strict=True):
        np.testing.assert_allclose(got.embedding, expected["embedding"], atol=1e-6)
    assert result.usage.prompt_tokens > 0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": []}, "input"),
        ({"input": "x", "dimensions": 7}, "dimensions"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": [10**9]}, "input"),
        ({"input": ["fine", "x" * 5000]}, "input"),  # the first is queued; the second's length fails it
        ({}, "input"),
    ],
)
def test_bad_bodies_are_400s_naming_the_field(server, body, param):
    response = post(server, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    deadline = time.monotonic() + 5  # an input queued before another failed is aborted, not left running
    while server.engine.stats()["num_running"] + server.engine.stats()["num_waiting"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.engine.stats()["num_running"] == server.engine.stats()["num_waiting"] == 0
