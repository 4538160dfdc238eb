"""The `vivace` commands: fast tests against a scripted stand-in engine, slow ones on the packaged model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from vivace import cli
from vivace.engine.config import InvalidParameterError, SamplingParams

runner = CliRunner()


# --- a stand-in engine with the LLM interface, so the command logic is tested without a model ---


@dataclass
class FakeCompletion:
    index: int
    text: str
    delta: str
    token_ids: list[int]
    finish_reason: str | None
    logprobs: Any = None


@dataclass
class FakeOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[FakeCompletion]
    finished: bool
    error: str | None = None


class FakeTokenizer:
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(map(chr, ids))

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + (
            "<assistant>" if add_generation_prompt else ""
        )

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        return self.encode(self.apply_chat_template(messages, add_generation_prompt), add_special_tokens=False)


class FakeEngine:
    """Validates like LLMEngine.validate_request: a prompt containing 'huge' does not fit the context."""

    def validate_request(self, prompt: str | list[int], params: SamplingParams) -> list[int]:
        text = prompt if isinstance(prompt, str) else "".join(map(chr, prompt))
        if "huge" in text:
            raise InvalidParameterError("prompt", "prompt has 9,213 tokens; this model's context is 8,192")
        return [ord(c) for c in text]


@dataclass
class FakeLLM:
    """Replies with the number of user turns it sees, word by word; finishes requests in reverse order."""

    tokenizer: FakeTokenizer = field(default_factory=FakeTokenizer)
    engine: FakeEngine = field(default_factory=FakeEngine)
    seen: list[Any] = field(default_factory=list)

    def _reply(self, prompt: str | list[int]) -> str:
        text = prompt if isinstance(prompt, str) else "".join(map(chr, prompt))
        return f"reply to {text.count('<user>')} turns"

    def stream(self, prompt: str | list[int], sampling_params: SamplingParams | None = None) -> Iterator[FakeOutput]:
        self.seen.append(prompt)
        if "boom" in self.tokenizer.decode(prompt) if isinstance(prompt, list) else "boom" in prompt:
            yield FakeOutput("r", [1], [FakeCompletion(0, "", "", [], "error")], True, "prompt too long")
            return
        words = self._reply(prompt).split(" ")
        text = ""
        for i, w in enumerate(words):
            delta = w if i == 0 else " " + w
            text += delta
            done = i == len(words) - 1
            yield FakeOutput(
                "r", [1], [FakeCompletion(0, text, delta, list(range(i + 1)), "stop" if done else None)], done
            )

    def generate_unordered(
        self, prompts: list[str | list[int]], sampling_params: list[SamplingParams]
    ) -> Iterator[tuple[int, FakeOutput]]:
        assert len(prompts) == len(sampling_params)
        for i in reversed(range(len(prompts))):
            self.seen.append(prompts[i])
            n = sampling_params[i].max_tokens
            text = self._reply(prompts[i])
            if "boom" in str(prompts[i]):
                yield i, FakeOutput(str(i), [0] * 3, [FakeCompletion(0, "", "", [], "error")], True, "prompt too long")
                continue
            yield i, FakeOutput(str(i), [0] * 3, [FakeCompletion(0, text, text, [7] * n, "length")], True)


@pytest.fixture
def fake_llm(monkeypatch) -> FakeLLM:
    llm = FakeLLM()
    monkeypatch.setattr(cli, "_load", lambda model, device, speculative=None: llm)
    return llm


def test_version():
    from importlib.metadata import version

    import vivace

    assert vivace.__version__ == version("vivace")
    result = runner.invoke(cli.app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"vivace {vivace.__version__}\n"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_generate_streams_chat_prompt(fake_llm):
    result = runner.invoke(cli.app, ["generate", "hello"])
    assert result.exit_code == 0, result.output
    assert result.output == "reply to 1 turns\n"
    assert fake_llm.seen == [[ord(c) for c in "<user>hello<assistant>"]]


def test_generate_no_chat_sends_raw_text(fake_llm):
    result = runner.invoke(cli.app, ["generate", "hello", "--no-chat"])
    assert result.exit_code == 0, result.output
    assert fake_llm.seen == ["hello"]


def test_generate_rejects_bad_sampling(fake_llm):
    result = runner.invoke(cli.app, ["generate", "hi", "--top-p", "2"])
    assert result.exit_code != 0
    assert fake_llm.seen == []


def test_chat_keeps_history_resets_and_exits(fake_llm):
    stdin = "first\nsecond\n\n/reset\nthird\n/exit\nnever read\n"
    result = runner.invoke(cli.app, ["chat", "--system", "be brief"], input=stdin)
    assert result.exit_code == 0, result.output
    replies = [line for line in result.output.splitlines() if line.startswith("reply")]
    assert replies == ["reply to 1 turns", "reply to 2 turns", "reply to 1 turns"]
    assert "never read" not in result.output
    last = "".join(map(chr, fake_llm.seen[-1]))
    assert last == "<system>be brief<user>third<assistant>"
    second = "".join(map(chr, fake_llm.seen[1]))
    assert second == "<system>be brief<user>first<assistant>reply to 1 turns<user>second<assistant>"


def test_chat_engine_error_drops_the_turn(fake_llm):
    result = runner.invoke(cli.app, ["chat"], input="boom\nafter\n")
    assert result.exit_code == 0, result.output
    assert "error: prompt too long" in result.output
    assert "reply to 1 turns" in result.output  # the failed turn is not in the history


def test_generate_engine_error_exits_nonzero(fake_llm):
    result = runner.invoke(cli.app, ["generate", "boom"])
    assert result.exit_code == 1


def test_chat_ends_at_eof(fake_llm):
    result = runner.invoke(cli.app, ["chat"], input="only\n")
    assert result.exit_code == 0, result.output
    assert len(fake_llm.seen) == 1


def test_batch_writes_results_errors_and_resumes(fake_llm, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [
        {"id": "a", "prompt": "plain", "max_tokens": 3},
        {"id": "b", "messages": [{"role": "user", "content": "hi"}]},
        {"id": "c", "prompt": "x", "temperature": -1},
        {"id": "d", "prompt": "y"},
        {"id": "e", "prompt": "boom"},
        {"id": "f", "messages": [{"role": "user", "content": "huge"}]},
    ]
    inp.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n", encoding="utf-8")
    result = runner.invoke(cli.app, ["batch", str(inp), str(out), "--max-tokens", "5"])
    assert result.exit_code == 0, result.output
    records = read_jsonl(out)
    by_index = {r["index"]: r for r in records}
    assert sorted(by_index) == [0, 1, 2, 3, 4, 5, 6]
    assert [r["index"] for r in records if "text" in r] == [3, 1, 0]  # completion order
    assert by_index[4] == {"index": 4, "id": "e", "error": "prompt too long"}
    assert "context is 8,192" in by_index[5]["error"] and by_index[5]["id"] == "f"
    assert by_index[0]["usage"] == {"prompt_tokens": 3, "completion_tokens": 3}  # per-line max_tokens wins
    assert by_index[3]["usage"]["completion_tokens"] == 5  # the command-line default
    assert by_index[1]["text"] == "reply to 1 turns" and by_index[1]["id"] == "b"
    assert by_index[2]["id"] == "c" and "temperature" in by_index[2]["error"]
    assert "invalid JSON" in by_index[6]["error"]

    # An interrupted run: drop two results and leave half a line behind.
    kept = [r for r in records if r["index"] not in (0, 3)]
    out.write_text("".join(json.dumps(r) + "\n" for r in kept) + '{"index": 0, "te', encoding="utf-8")
    fake_llm.seen.clear()
    result = runner.invoke(cli.app, ["batch", str(inp), str(out), "--max-tokens", "5"])
    assert result.exit_code == 0, result.output
    assert fake_llm.seen == ["y", "plain"]
    records = read_jsonl(out)
    assert sorted(r["index"] for r in records) == [0, 1, 2, 3, 4, 5, 6]

    # Nothing left: a third run does not even load the model.
    fake_llm.seen.clear()
    result = runner.invoke(cli.app, ["batch", str(inp), str(out)])
    assert result.exit_code == 0 and fake_llm.seen == []
    assert len(read_jsonl(out)) == 7


def test_batch_corrupt_output_is_reported(fake_llm, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text('{"prompt": "a"}\n', encoding="utf-8")
    out.write_text("garbage\n", encoding="utf-8")
    result = runner.invoke(cli.app, ["batch", str(inp), str(out)])
    assert result.exit_code == 1
    assert fake_llm.seen == []


# --- end to end on the packaged model ---


@pytest.fixture(scope="module")
def real_llm():
    from vivace.engine.llm import LLM

    return LLM()


@pytest.fixture
def use_real_llm(real_llm, monkeypatch):
    """The commands' own loading code, with the model loaded once for the module."""
    monkeypatch.setattr(cli, "_load", lambda model, device, speculative=None: real_llm)
    return real_llm


@pytest.mark.slow
def test_real_batch_runs_and_resumes(use_real_llm, tmp_path):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [
        {"id": "cap", "prompt": "The capital of France is", "temperature": 0},
        {"id": "chat", "messages": [{"role": "user", "content": "Say hi."}], "temperature": 0},
        {"id": "count", "prompt": "1, 2, 3,", "max_tokens": 4, "temperature": 0},
        {"id": "bad", "prompt": "x", "top_p": 0},
        {"id": "long", "prompt": "Once upon a time", "seed": 3},
        {"id": "huge", "prompt": "word " * 10000},  # longer than the model's context
    ]
    inp.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    result = runner.invoke(cli.app, ["batch", str(inp), str(out), "--max-tokens", "8"])
    assert result.exit_code == 0, result.output
    first = {r["index"]: r for r in read_jsonl(out)}
    assert sorted(first) == [0, 1, 2, 3, 4, 5]
    assert "error" in first[3] and "error" in first[5]
    for i in (0, 1, 2, 4):
        r = first[i]
        assert r["id"] == lines[i]["id"]
        assert r["finish_reason"] in ("stop", "length")
        assert r["usage"]["prompt_tokens"] > 0
        assert 1 <= r["usage"]["completion_tokens"] <= lines[i].get("max_tokens", 8)
    assert first[2]["usage"]["completion_tokens"] <= 4

    # Interrupt: keep lines 1, 3 and 5, leave a partial line; the rerun redoes only 0, 2 and 4.
    kept = "".join(json.dumps(first[i]) + "\n" for i in (1, 3, 5))
    out.write_text(kept + '{"index": 2, "te', encoding="utf-8")
    result = runner.invoke(cli.app, ["batch", str(inp), str(out), "--max-tokens", "8"])
    assert result.exit_code == 0, result.output
    second = read_jsonl(out)
    assert sorted(r["index"] for r in second) == [0, 1, 2, 3, 4, 5]
    assert second[:3] == [first[1], first[3], first[5]]
    by_index = {r["index"]: r for r in second}
    for i in (0, 2):  # greedy lines come out the same
        assert by_index[i] == first[i]


@pytest.mark.slow
def test_real_chat_through_stdin(use_real_llm):
    result = runner.invoke(
        cli.app,
        ["chat", "--temperature", "0", "--max-tokens", "12"],
        input="Hello!\nWhat is 2+2?\n/reset\nBye.\n/exit\n",
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.count(">>> ") == 5  # four turns and /reset echoed, /exit ends it
    assert "(history cleared)" in out
    # Every user turn got a non-empty reply before the next prompt.
    for block in out.split(">>> ")[1:]:
        head, _, reply = block.partition("\n")
        if head.strip() not in ("/reset", "/exit"):
            assert reply.strip(), out


@pytest.mark.slow
def test_real_generate_greedy_matches_engine(use_real_llm):
    result = runner.invoke(cli.app, ["generate", "Name a color.", "--temperature", "0", "--max-tokens", "10"])
    assert result.exit_code == 0, result.output
    ids = use_real_llm.tokenizer.encode_chat([{"role": "user", "content": "Name a color."}])
    expected = use_real_llm.generate([ids], SamplingParams(temperature=0, max_tokens=10), use_tqdm=False)[0]
    assert result.output == expected.outputs[0].text + "\n"


@pytest.mark.slow
def test_console_script_generate():
    """The installed `vivace` entry point, in its own process, loading the packaged model itself."""
    exe = shutil.which("vivace", path=str(Path(sys.executable).parent))
    assert exe, "the vivace console script is not installed next to this Python"
    proc = subprocess.run(
        [exe, "generate", "The sky is", "--no-chat", "--temperature", "0", "--max-tokens", "5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


@pytest.mark.parametrize(
    ("args", "hint", "message"),
    [
        (["serve", "/nonexistent/model.gguf"], "MODEL", "does not exist"),
        (["generate", "hi", "--model", "/nonexistent/model.gguf"], "--model", "does not exist"),
        (["generate", "hi", "--device", "tpu"], "--device", "must be 'cpu', 'cuda' or 'cuda:N'"),
    ],
)
def test_model_and_device_errors_are_usage_errors_not_tracebacks(args, hint, message):
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 2, result.output
    assert hint in result.output and message in _plain(result.output)
    assert "Traceback" not in result.output


def _plain(output: str) -> str:
    """Rich's error box without its frame and line wrapping."""
    return " ".join(output.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a CUDA GPU")
def test_cuda_without_a_gpu_says_so_before_loading():
    result = runner.invoke(cli.app, ["serve", "--device", "cuda"])
    assert result.exit_code == 2 and "sees no CUDA GPU" in _plain(result.output)


def test_generate_speculates_with_the_same_greedy_output():
    """`--speculative ngram` on a random-weight model (whose output repeats): same text as without."""
    args = ["generate", "1 2 3 1 2 3 1 2 3", "--no-chat", "-m", "random:tiny@3", "--temperature", "0"]
    args += ["--max-tokens", "24"]
    plain = runner.invoke(cli.app, args)
    spec = runner.invoke(cli.app, [*args, "--speculative", "ngram:k=4,min_n=1"])
    assert plain.exit_code == 0 and spec.exit_code == 0, (plain.output, spec.output)
    assert spec.output == plain.output
    bad = runner.invoke(cli.app, [*args, "--speculative", "ngram:k=0"])
    assert bad.exit_code == 2
    assert "--speculative" in bad.output
