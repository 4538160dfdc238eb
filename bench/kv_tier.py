"""Session KV tier: time to first token of a long chat's next turn whose device blocks were evicted,
restored from the on-disk tier vs recomputed, side by side in one run, and the greedy outputs compared.

Each history length gets two engines on the packaged model (its CPU defaults), identical but for the
tier (`--kv-tier-bytes` on a file in a temporary directory), with a KV budget of turn N and its answer
only, so an unrelated prompt as long evicts the whole history. Per round and engine: the pressure prompt (a
fresh one each round, so it is never itself cached), then turn N (the history plus a new user
message), timed from submission to its first token, then run on to `--new-tokens` greedy tokens.
Engines alternate within each round; medians over `--rounds` are reported. The conversation is the
repository's LICENSE text cut into user and assistant turns.

    python bench/kv_tier.py                                  # histories of 2k and 4k tokens
    python bench/kv_tier.py --histories 4096 --rounds 3
    python bench/kv_tier.py --attention-backend torch --quantization none   # no compiled kernels
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from vivace.engine.config import EngineConfig, SamplingParams
from vivace.engine.engine import LLMEngine

ROOT = Path(__file__).resolve().parent.parent
TEXT = (ROOT / "LICENSE").read_text()
NEW_MESSAGE = "Summarize what we discussed so far in one sentence."


def conversation(engine: LLMEngine, history_tokens: int) -> tuple[list[int], list[int]]:
    """(history ids, turn N ids): alternating user/assistant turns of LICENSE text up to `history_tokens`."""
    words = TEXT.split()
    messages: list[dict[str, str]] = []
    ids: list[int] = []
    start = 0
    while len(ids) < history_tokens:
        role = "user" if len(messages) % 2 == 0 else "assistant"
        chunk = " ".join(words[start % len(words) : start % len(words) + 60])
        start += 60
        messages.append({"role": role, "content": chunk})
        ids = engine.tokenizer.encode_chat(messages, add_generation_prompt=False)
    turn = engine.tokenizer.encode_chat([*messages, {"role": "user", "content": NEW_MESSAGE}])
    assert turn[: len(ids)] == ids, "the chat template must extend the history's tokens"
    return ids, turn


def pressure_prompt(engine: LLMEngine, num_tokens: int, seed: int) -> list[int]:
    """Token ids no earlier prompt shares a block with (a different first token each round)."""
    words = TEXT.split()
    text = f"Pressure round {seed}: " + " ".join(reversed(words))
    ids = engine.tokenizer.encode(text)
    while len(ids) < num_tokens:
        ids += ids
    return ids[:num_tokens]


def run(engine: LLMEngine, ids: list[int], new_tokens: int, rid: str) -> tuple[float, list[int]]:
    """(seconds to the first token, the greedy output token ids)."""
    start = time.perf_counter()
    engine.add_request(rid, ids, SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True))
    ttft = None
    tokens: list[int] = []
    while engine.has_unfinished_requests():
        for out in engine.step():
            if ttft is None and out.outputs[0].token_ids:
                ttft = time.perf_counter() - start
            if out.finished:
                tokens = list(out.outputs[0].token_ids)
    return ttft, tokens


def bench_history(history_tokens: int, rounds: int, new_tokens: int, tier_dir: str, **engine: str) -> dict:
    """Turn N's TTFT with the tier and without, per round, for one history length (`engine`: EngineConfig fields)."""
    probe = LLMEngine(EngineConfig(kv_cache_memory_bytes=64 << 20, **engine))
    per_token = probe.model.kv_bytes_per_token(probe.kv_dtype)
    history, turn = conversation(probe, history_tokens)
    del probe
    # Room for turn N and its answer only: a pressure prompt as long evicts every block of the history.
    context = len(turn) + new_tokens + 16
    common = dict(kv_cache_memory_bytes=context * per_token, max_model_len=context, **engine)
    engines = {
        "recompute": LLMEngine(EngineConfig(**common)),
        "tier": LLMEngine(
            EngineConfig(**common, kv_tier_bytes=3 * context * per_token, kv_tier_path=f"{tier_dir}/{history_tokens}")
        ),
    }
    for name, engine in engines.items():
        run(engine, history, 1, f"{name}-history")  # turn N-1: the history computed once
    ttfts: dict[str, list[float]] = {name: [] for name in engines}
    outputs: dict[str, list[list[int]]] = {name: [] for name in engines}
    cached: dict[str, list[int]] = {name: [] for name in engines}
    for r in range(rounds):
        for name, engine in engines.items():
            run(engine, pressure_prompt(engine, len(turn) + new_tokens, r), 1, f"{name}-pressure-{r}")
            before = engine.stats()["prompt_tokens_reused"]
            ttft, tokens = run(engine, turn, new_tokens, f"{name}-turn-{r}")
            cached[name].append(engine.stats()["prompt_tokens_reused"] - before)
            ttfts[name].append(ttft)
            outputs[name].append(tokens)
    tier_stats = engines["tier"].stats()
    for engine in engines.values():
        engine.close()
    median = {name: statistics.median(values) for name, values in ttfts.items()}
    return {
        "history_tokens": len(history),
        "turn_tokens": len(turn),
        "ttft_s": ttfts,
        "median_ttft_s": median,
        "speedup": median["recompute"] / median["tier"],
        "cached_tokens": cached,
        "outputs_identical": all(a == b for a, b in zip(outputs["tier"], outputs["recompute"], strict=True)),
        "tier_hits": tier_stats["kv_tier_hits"],
        "tier_misses": tier_stats["kv_tier_misses"],
        "tier_rejected": tier_stats["kv_tier_rejected"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--histories", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--attention-backend", default="auto", help="the kernel set (EngineConfig)")
    parser.add_argument("--quantization", default="auto", help="linear weights (EngineConfig)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tier_dir:
        for history in args.histories:
            result = bench_history(
                history,
                args.rounds,
                args.new_tokens,
                tier_dir,
                attention_backend=args.attention_backend,
                quantization=args.quantization,
            )
            results.append(result)
            m = result["median_ttft_s"]
            print(
                f"history {result['history_tokens']:>5} tokens: turn N TTFT recomputed {m['recompute']:.3f} s, "
                f"restored {m['tier']:.3f} s ({result['speedup']:.1f}x); cached tokens "
                f"{result['cached_tokens']}; outputs identical: {result['outputs_identical']}",
                flush=True,
            )
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
