"""Benchmark workloads: random prompts of exact token lengths, the built-in chat set, or a JSONL file."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vivace.bench.chat_prompts import CHAT_PROMPTS
from vivace.engine.tokenizer import Tokenizer
from vivace.providers.base import GenerationRequest

DISTRIBUTIONS = ("fixed", "uniform", "normal")
_WORD = re.compile(r"^[Ġ▁][a-z]{3,8}$")  # a space-prefixed lowercase word: byte-level BPE (Ġ) or SentencePiece (▁)
_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "stop", "seed", "ignore_eos")


class WorkloadError(ValueError):
    """A workload cannot be built (bad parameters, an unreadable or malformed file)."""


@dataclass
class WorkItem:
    """One request to send, and the prompt's token count when the workload knows it exactly."""

    request: GenerationRequest
    input_tokens: int | None = None


def sample_lengths(n: int, mean: int, dist: str = "fixed", spread: float = 0.0, seed: int = 0) -> list[int]:
    """`n` lengths >= 1: all `mean` (fixed), uniform in mean*(1 -/+ spread), or normal with sd mean*spread."""
    if n < 1 or mean < 1:
        raise WorkloadError(f"need n >= 1 and a length >= 1, got n={n}, length={mean}")
    if dist not in DISTRIBUTIONS:
        raise WorkloadError(f"unknown length distribution {dist!r}; choose one of {', '.join(DISTRIBUTIONS)}")
    if not 0 <= spread <= 1:
        raise WorkloadError(f"spread must be in 0..1, got {spread}")
    rng = random.Random(seed)
    if dist == "fixed":
        return [mean] * n
    if dist == "uniform":
        lo, hi = max(1, round(mean * (1 - spread))), max(1, round(mean * (1 + spread)))
        return [rng.randint(lo, hi) for _ in range(n)]
    return [max(1, round(rng.gauss(mean, mean * spread))) for _ in range(n)]


def _single_token_words(tokenizer: Tokenizer) -> list[str]:
    """Words whose space-prefixed form is exactly one token (so n words make exactly n tokens)."""
    vocab = tokenizer.backend.get_vocab(with_added_tokens=False)
    words = sorted(token[1:] for token in vocab if _WORD.match(token))
    words = [w for w in words if len(tokenizer.encode(" " + w, add_special_tokens=False)) == 1]
    if len(words) < 100:
        raise WorkloadError("this tokenizer has too few single-token words to build random prompts")
    return words


def random_prompt(tokenizer: Tokenizer, length: int, rng: random.Random, words: list[str]) -> str:
    """A text of random words that encodes to exactly `length` tokens (checked)."""
    for _ in range(20):
        text = "".join(" " + rng.choice(words) for _ in range(length))
        if len(tokenizer.encode(text, add_special_tokens=False)) == length:
            return text
    raise WorkloadError(f"could not build a prompt of exactly {length} tokens with this tokenizer")


def random_workload(
    tokenizer: Tokenizer,
    n: int,
    input_len: int,
    output_len: int,
    dist: str = "fixed",
    spread: float = 0.0,
    seed: int = 0,
) -> list[WorkItem]:
    """`n` raw prompts of exact input lengths, each asking for its output length with ignore_eos."""
    inputs = sample_lengths(n, input_len, dist, spread, seed)
    outputs = sample_lengths(n, output_len, dist, spread, seed + 1)
    rng, words = random.Random(seed), _single_token_words(tokenizer)
    return [
        WorkItem(GenerationRequest(prompt=random_prompt(tokenizer, i, rng, words), max_tokens=o, ignore_eos=True), i)
        for i, o in zip(inputs, outputs, strict=True)
    ]


def chat_workload(n: int, max_tokens: int = 128) -> list[WorkItem]:
    """`n` requests cycling through the built-in chat prompts."""
    if n < 1 or max_tokens < 1:
        raise WorkloadError(f"need n >= 1 and max_tokens >= 1, got n={n}, max_tokens={max_tokens}")
    return [
        WorkItem(
            GenerationRequest(
                messages=[{"role": "user", "content": CHAT_PROMPTS[i % len(CHAT_PROMPTS)]}], max_tokens=max_tokens
            )
        )
        for i in range(n)
    ]


def _item_from_json(obj: Any, where: str, default_max_tokens: int) -> WorkItem:
    if not isinstance(obj, dict):
        raise WorkloadError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if ("prompt" in obj) == ("messages" in obj):
        raise WorkloadError(f"{where}: needs exactly one of 'prompt' (a string) or 'messages' (a chat list)")
    if "prompt" in obj and not isinstance(obj["prompt"], str):
        raise WorkloadError(f"{where}: 'prompt' must be a string")
    if "messages" in obj and not (isinstance(obj["messages"], list) and obj["messages"]):
        raise WorkloadError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    max_tokens = obj.get("max_tokens", default_max_tokens)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise WorkloadError(f"{where}: 'max_tokens' must be a positive integer, got {max_tokens!r}")
    sampling = {k: obj[k] for k in _SAMPLING_FIELDS if k in obj}
    return WorkItem(
        GenerationRequest(prompt=obj.get("prompt"), messages=obj.get("messages"), max_tokens=max_tokens, **sampling)
    )


def jsonl_workload(path: str | Path, default_max_tokens: int = 128) -> list[WorkItem]:
    """One request per non-blank line of {prompt | messages, max_tokens, optional sampling fields}."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise WorkloadError(f"cannot read workload file {path}: {e.strerror or e}") from None
    items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise WorkloadError(f"{path}:{number}: invalid JSON ({e.msg})") from None
        items.append(_item_from_json(obj, f"{path}:{number}", default_max_tokens))
    if not items:
        raise WorkloadError(f"{path}: no requests in the file")
    return items
