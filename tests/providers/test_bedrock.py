"""Bedrock through a real boto3 client: request shape and errors with botocore's Stubber, streams from a
real HTTP peer speaking the event-stream wire format (Stubber validates a response against the output
shape and cannot hold an EventStream, so the streamed events go over HTTP and botocore parses them)."""

import asyncio
import time

import pytest

from tests.live_server import start_uvicorn, stop_uvicorn
from tests.providers import eventstream_wire as wire
from vivace.providers import GenerationRequest, ProviderError, get_provider
from vivace.providers.base import Usage

boto3 = pytest.importorskip("boto3", reason="Bedrock tests need boto3 (pip install 'vivace[bedrock]')")
from botocore.stub import Stubber  # noqa: E402

from vivace.providers.bedrock import BedrockProvider, converse_kwargs  # noqa: E402

MODEL_ID = "anthropic.claude-test-v1"
CREDS = {"aws_access_key_id": "AKIATEST", "aws_secret_access_key": "not-a-real-secret"}


def _client(endpoint_url: str | None = None):
    from botocore.config import Config

    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=endpoint_url,
        config=Config(retries={"total_max_attempts": 1}),
        **CREDS,
    )


def test_request_shape_from_chat_messages():
    request = GenerationRequest(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": [{"type": "text", "text": "there"}]},
        ],
        max_tokens=20,
        temperature=0.0,
        top_p=0.5,
        top_k=4,
        stop=["\n"],
    )
    assert converse_kwargs(MODEL_ID, request) == {
        "modelId": MODEL_ID,
        "system": [{"text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"text": "Hi"}, {"text": "there"}]}],
        "inferenceConfig": {"maxTokens": 20, "temperature": 0.0, "topP": 0.5, "stopSequences": ["\n"]},
        "additionalModelRequestFields": {"top_k": 4},
    }


def test_bad_role_is_a_400():
    with pytest.raises(ProviderError, match="role 'tool'") as err:
        converse_kwargs(MODEL_ID, GenerationRequest(messages=[{"role": "tool", "content": "x"}]))
    assert err.value.status == 400


@pytest.mark.parametrize(
    "code, status, retryable",
    [
        ("ThrottlingException", 429, True),
        ("ServiceUnavailableException", 503, True),
        ("ValidationException", 400, False),
        ("AccessDeniedException", 403, False),
    ],
)
async def test_stubbed_client_errors_map_to_provider_errors(code, status, retryable):
    client = _client()
    provider = BedrockProvider(MODEL_ID, client=client)
    request = GenerationRequest(prompt="Hello", max_tokens=5)
    with Stubber(client) as stub:  # expected_params: the stub also checks the request we send
        stub.add_client_error(
            "converse_stream",
            service_error_code=code,
            service_message="scripted",
            http_status_code=status,
            expected_params=converse_kwargs(MODEL_ID, request),
        )
        with pytest.raises(ProviderError, match=f"{code}: scripted") as err:
            await provider.complete(request)
        stub.assert_no_pending_responses()
    assert (err.value.status, err.value.retryable) == (status, retryable)


def test_stubber_cannot_hold_an_event_stream():
    """Why the streams below come from an HTTP peer: Stubber validates `stream` as a plain structure."""
    from botocore.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="stream"):
        Stubber(_client()).add_response("converse_stream", {"stream": [{"messageStop": {"stopReason": "end_turn"}}]})


class BedrockPeer:
    """A real HTTP server answering ConverseStream with scripted event-stream frames."""

    def __init__(self) -> None:
        self.script: list[dict] = []
        self.requests: list[dict] = []

    def app(self):
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse, StreamingResponse

        app = FastAPI()

        @app.post("/model/{model_id}/converse-stream")
        async def converse_stream(model_id: str, request: Request):
            self.requests.append(
                {
                    "time": time.monotonic(),
                    "model": model_id,
                    "body": await request.json(),
                    "signed": request.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256"),
                }
            )
            step = self.script.pop(0) if self.script else {"frames": wire.converse_stream(["Hello", " there"])}
            if "status" in step:
                return JSONResponse(
                    {"message": step["message"]}, status_code=step["status"], headers={"x-amzn-ErrorType": step["code"]}
                )

            async def body():
                for frame in step["frames"]:
                    yield frame
                    await asyncio.sleep(0.01)

            return StreamingResponse(body(), media_type="application/vnd.amazon.eventstream")

        return app


@pytest.fixture(scope="module")
def bedrock_peer():
    peer = BedrockPeer()
    server, thread, url = start_uvicorn(peer.app())
    peer.url = url
    yield peer
    stop_uvicorn(server, thread)


@pytest.fixture
def peer(bedrock_peer):
    bedrock_peer.script.clear()
    bedrock_peer.requests.clear()
    return bedrock_peer


async def test_streams_content_block_deltas_then_stop_reason_and_usage(peer):
    peer.script.append({"frames": wire.converse_stream(["The", " sky", " is", " blue"], "max_tokens", 9)})
    provider = BedrockProvider(MODEL_ID, client=_client(peer.url))
    deltas = [
        d
        async for d in provider.stream(
            GenerationRequest(messages=[{"role": "user", "content": "Sky colour?"}], max_tokens=4)
        )
    ]
    assert [d.text for d in deltas] == ["The", " sky", " is", " blue", ""]
    assert deltas[-1].finish_reason == "length" and deltas[-1].usage == Usage(9, 4)
    sent = peer.requests[0]
    assert sent["model"] == MODEL_ID and sent["signed"]
    assert sent["body"]["messages"] == [{"role": "user", "content": [{"text": "Sky colour?"}]}]
    assert sent["body"]["inferenceConfig"] == {"maxTokens": 4}


async def test_exception_event_mid_stream_is_a_provider_error_without_retry(peer, monkeypatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "AKIATEST",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    peer.script.append(
        {
            "frames": [
                wire.event("messageStart", {"role": "assistant"}),
                wire.event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "A"}}),
                wire.exception("modelStreamErrorException", "model fell over"),
            ]
        }
    )
    provider = get_provider(f"bedrock:{MODEL_ID}", endpoint_url=peer.url, retries=3, backoff=0.01)
    texts = []
    with pytest.raises(ProviderError, match="model fell over") as err:
        async for delta in provider.stream(GenerationRequest(prompt="x")):
            texts.append(delta.text)
    assert texts == ["A"] and len(peer.requests) == 1  # streamed text is never repeated
    assert err.value.status == 500


async def test_throttling_before_the_stream_is_retried(peer, monkeypatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "AKIATEST",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    peer.script.append({"status": 429, "code": "ThrottlingException", "message": "Too many requests"})
    provider = get_provider(f"bedrock:{MODEL_ID}", endpoint_url=peer.url, retries=2, backoff=0.01)
    text, last = await provider.complete(GenerationRequest(prompt="x"))
    assert text == "Hello there" and last.finish_reason == "stop" and len(peer.requests) == 2


async def test_missing_credentials_name_the_variables(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    provider = BedrockProvider(MODEL_ID, region="us-east-1", endpoint_url="http://127.0.0.1:9")
    with pytest.raises(ProviderError, match="AWS_ACCESS_KEY_ID") as err:
        await provider.complete(GenerationRequest(prompt="x"))
    assert err.value.status == 401 and not err.value.retryable
