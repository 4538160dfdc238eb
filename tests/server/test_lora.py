"""LoRA adapters over a real server with the official openai client: picked by model name (`adapter` or
`base:adapter`), listed in /v1/models, loaded and unloaded at run time (vLLM's routes), with clear errors,
and concurrent requests for different adapters each answered as the offline engine answers them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.live_server import start_uvicorn, stop_uvicorn
from tests.lora_models import TRAIN_PROMPT, LoRAModels, write_lora_models, write_random_adapter
from vivace.engine.config import SamplingParams
from vivace.engine.llm import LLM
from vivace.engine.loaders.default_model import default_model_path

pytestmark = pytest.mark.slow
BASE = "tiny"
TOKENS = 8
PROMPTS = [TRAIN_PROMPT, [1, 2000, 3000, 4000, 5000, 6000], [1, 77, 88, 99]]
ENGINE = dict(
    quantization="none", attention_backend="torch", kv_cache_memory_bytes=16 << 20, max_loras=3, max_lora_rank=8
)


@dataclass
class LoRAServer:
    url: str
    models: LoRAModels
    expected: dict[tuple[str | None, int], str]  # (adapter, prompt index) -> offline greedy text
    engine: object


@pytest.fixture(scope="module")
def lora_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoRAServer]:
    from vivace.engine.async_engine import AsyncEngine
    from vivace.server.app import create_app

    models = write_lora_models(tmp_path_factory.mktemp("lora"), default_model_path())
    llm = LLM(str(models.base), **ENGINE, lora_modules={"all-r8": str(models.adapters["all-r8"])})
    llm.load_lora("trained", str(models.adapters["trained"]))
    greedy = SamplingParams(temperature=0.0, max_tokens=TOKENS, ignore_eos=True)
    expected = {
        (name, i): llm.generate([ids], greedy, lora=name, use_tqdm=False)[0].outputs[0].text
        for name in (None, "all-r8", "trained")
        for i, ids in enumerate(PROMPTS)
    }
    llm.unload_lora("trained")  # the server starts with all-r8 only
    engine = AsyncEngine(llm.engine)
    server, thread, url = start_uvicorn(create_app(engine, BASE))
    yield LoRAServer(url, models, expected, engine)
    stop_uvicorn(server, thread)
    engine.shutdown()


def client(s: LoRAServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=s.url + "/v1", api_key="none", max_retries=0)


def complete(s: LoRAServer, model: str, prompt: int) -> str:
    out = client(s).completions.create(
        model=model, prompt=PROMPTS[prompt], max_tokens=TOKENS, temperature=0.0, extra_body={"ignore_eos": True}
    )
    assert out.model == model
    return out.choices[0].text


def test_adapter_by_either_name_answers_as_offline(lora_server: LoRAServer) -> None:
    for i in range(len(PROMPTS)):
        assert complete(lora_server, "all-r8", i) == lora_server.expected[("all-r8", i)]
        assert complete(lora_server, f"{BASE}:all-r8", i) == lora_server.expected[("all-r8", i)]
        assert complete(lora_server, BASE, i) == lora_server.expected[(None, i)]
    assert lora_server.expected[("all-r8", 0)] != lora_server.expected[(None, 0)]


def test_models_list_adapters_with_their_parent(lora_server: LoRAServer) -> None:
    models = {m.id: m for m in client(lora_server).models.list().data}
    assert set(models) == {BASE, "all-r8"}
    assert models["all-r8"].model_extra["parent"] == BASE
    assert client(lora_server).models.retrieve(f"{BASE}:all-r8").id == "all-r8"
    with pytest.raises(openai.NotFoundError):
        client(lora_server).models.retrieve("no-such-adapter")


def test_load_use_and_unload_at_run_time(lora_server: LoRAServer) -> None:
    path = str(lora_server.models.adapters["trained"])
    r = httpx.post(lora_server.url + "/v1/load_lora_adapter", json={"lora_name": "trained", "lora_path": path})
    assert r.status_code == 200, r.text
    assert "trained" in {m.id for m in client(lora_server).models.list().data}
    assert complete(lora_server, "trained", 0) == lora_server.expected[("trained", 0)]
    r = httpx.post(lora_server.url + "/v1/unload_lora_adapter", json={"lora_name": "trained"})
    assert r.status_code == 200, r.text
    assert "trained" not in {m.id for m in client(lora_server).models.list().data}
    with pytest.raises(openai.NotFoundError):
        complete(lora_server, "trained", 0)


def test_bad_adapter_requests_are_clear_errors(lora_server: LoRAServer, tmp_path: Path) -> None:
    load = lora_server.url + "/v1/load_lora_adapter"
    write_random_adapter(lora_server.models.base, tmp_path / "r16", 0, r=16, lora_alpha=16, target_modules=["q_proj"])
    cases = [
        ({"lora_name": "x", "lora_path": str(tmp_path / "missing")}, 400, "lora_path", "not a directory"),
        (
            {"lora_name": "all-r8", "lora_path": str(lora_server.models.adapters["trained"])},
            400,
            "lora_name",
            "already",
        ),
        ({"lora_name": "big", "lora_path": str(tmp_path / "r16")}, 400, "lora_path", "max_lora_rank 8"),
        ({"lora_name": BASE, "lora_path": str(lora_server.models.adapters["trained"])}, 400, "lora_name", "base"),
        ({"lora_path": str(lora_server.models.adapters["trained"])}, 400, "lora_name", ""),
    ]
    for body, status, param, words in cases:
        r = httpx.post(load, json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"]["param"] == param, r.text
        assert words in r.json()["error"]["message"]
    r = httpx.post(lora_server.url + "/v1/unload_lora_adapter", json={"lora_name": "nope"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "lora_name", r.text
    with pytest.raises(openai.NotFoundError, match="no-such"):
        complete(lora_server, "no-such", 0)
    # Every slot taken: the next load is refused, and the server keeps serving.
    for name in ("fill-1", "fill-2"):
        assert (
            httpx.post(
                load, json={"lora_name": name, "lora_path": str(lora_server.models.adapters["trained"])}
            ).status_code
            == 200
        )
    r = httpx.post(load, json={"lora_name": "fill-3", "lora_path": str(lora_server.models.adapters["trained"])})
    assert r.status_code == 400 and "max_loras" in r.json()["error"]["message"], r.text
    for name in ("fill-1", "fill-2"):
        assert httpx.post(lora_server.url + "/v1/unload_lora_adapter", json={"lora_name": name}).status_code == 200
    assert complete(lora_server, "all-r8", 1) == lora_server.expected[("all-r8", 1)]


def test_concurrent_requests_for_different_adapters(lora_server: LoRAServer) -> None:
    path = str(lora_server.models.adapters["trained"])
    assert (
        httpx.post(
            lora_server.url + "/v1/load_lora_adapter", json={"lora_name": "trained", "lora_path": path}
        ).status_code
        == 200
    )

    async def run() -> list[tuple[tuple[str | None, int], str]]:
        aclient = openai.AsyncOpenAI(base_url=lora_server.url + "/v1", api_key="none", max_retries=0)
        cases = [(name, i) for name in (None, "all-r8", "trained") for i in range(len(PROMPTS))] * 2

        async def one(name: str | None, i: int) -> tuple[tuple[str | None, int], str]:
            out = await aclient.completions.create(
                model=name or BASE,
                prompt=PROMPTS[i],
                max_tokens=TOKENS,
                temperature=0.0,
                extra_body={"ignore_eos": True},
            )
            return (name, i), out.choices[0].text

        return await asyncio.gather(*(one(*case) for case in cases))

    for key, text in asyncio.run(run()):
        assert text == lora_server.expected[key], key
    assert httpx.post(lora_server.url + "/v1/unload_lora_adapter", json={"lora_name": "trained"}).status_code == 200
    assert lora_server.engine.stats()["blocks_in_use"] == 0
