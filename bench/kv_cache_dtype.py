"""INT8 KV cache vs bfloat16 KV cache: quality, KV bytes and decode speed, side by side in one run.

Quality is measured teacher-forced on a held text nobody wrote for this benchmark (the Apache-2.0
license in the repository's LICENSE file, ~2.6k tokens): perplexity from `prompt_logprobs`, and the
fraction of positions where the int8-KV engine's top-1 token equals the bf16-KV engine's.
Speed: decode tokens/s of one stream at a long context, and of many concurrent streams, measured
from the step at which every stream has its first token to the end; the two engines alternate
`--pairs` times and medians are reported. Weights are the same in both (the CPU default, int8).

    python bench/kv_cache_dtype.py                       # the packaged SmolLM2-135M
    python bench/kv_cache_dtype.py --model gemma3 --long-context 4096 --streams 64
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from vivace.engine.config import SamplingParams
from vivace.engine.llm import LLM

ROOT = Path(__file__).resolve().parent.parent
HELD_TEXT = ROOT / "LICENSE"
RESULTS_DIR = ROOT / "bench" / "results"


@dataclass
class Quality:
    kv_dtype: str
    tokens: int
    perplexity: float
    top1_agreement: float  # with the bf16-KV engine's top-1 at each position


@dataclass
class Speed:
    kv_dtype: str
    kv_bytes_per_token: int
    long_context_decode_tok_s: float
    concurrent_decode_tok_s: float


def scored_prompt(llm: LLM, ids: list[int]) -> tuple[list[float], list[int]]:
    """Logprob of every token after the first, and the engine's top-1 token at each of those positions."""
    out = llm.generate([ids], SamplingParams(max_tokens=1, prompt_logprobs=1))[0]
    scores = out.prompt_logprobs or []
    return [t.logprob for t in scores], [t.top[0][0] for t in scores]


def decode_rate(llm: LLM, prompts: list[list[int]], new_tokens: int) -> float:
    """Tokens/s over the steps after every stream has produced its first token."""
    engine = llm.engine
    engine.scheduler.kv.reset_prefix_cache()
    params = SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True)
    for i, ids in enumerate(prompts):
        engine.add_request(f"rate-{i}", ids, params)
    produced: dict[str, int] = {}
    t_all, count_at = None, 0
    while engine.has_unfinished_requests():
        for out in engine.step():
            produced[out.request_id] = len(out.outputs[0].token_ids)
        if t_all is None and len(produced) == len(prompts) and all(produced.values()):
            t_all, count_at = time.perf_counter(), sum(produced.values())
    elapsed = time.perf_counter() - t_all
    return (sum(produced.values()) - count_at) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model name or GGUF path (default: the packaged SmolLM2-135M)")
    ap.add_argument("--long-context", type=int, default=4096, help="prompt tokens of the single long stream")
    ap.add_argument("--streams", type=int, default=64, help="concurrent streams")
    ap.add_argument("--stream-prompt", type=int, default=256, help="prompt tokens of each concurrent stream")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--kv-cache-memory", type=int, default=1 << 30, help="KV budget in bytes, both engines")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    dtypes = ("bfloat16", "int8")
    engines = {
        d: LLM(args.model, kv_cache_dtype=d, kv_cache_memory_bytes=args.kv_cache_memory, max_num_seqs=args.streams)
        for d in dtypes
    }
    reference = engines["bfloat16"]
    ids = reference.engine.tokenize_prompt(HELD_TEXT.read_text())[: reference.engine.max_model_len]
    scored = {d: scored_prompt(llm, ids) for d, llm in engines.items()}
    quality = []
    for d in dtypes:
        logprobs, top1 = scored[d]
        agree = sum(a == b for a, b in zip(top1, scored["bfloat16"][1], strict=True)) / len(top1)
        quality.append(Quality(d, len(ids), math.exp(-statistics.fmean(logprobs)), agree))

    vocab = reference.engine.model_config.vocab_size
    long_prompt = [(7 * i + 11) % (vocab - 1000) + 500 for i in range(args.long_context)]
    stream_prompts = [
        [(13 * i + 5 * s + 3) % (vocab - 1000) + 500 for i in range(args.stream_prompt)] for s in range(args.streams)
    ]
    runs: dict[str, dict[str, list[float]]] = {d: {"long": [], "many": []} for d in dtypes}
    for _ in range(args.pairs):
        for d in dtypes:  # alternating, so drift on the machine hits both alike
            runs[d]["long"].append(decode_rate(engines[d], [long_prompt], args.new_tokens))
            runs[d]["many"].append(decode_rate(engines[d], stream_prompts, args.new_tokens))
    speed = [
        Speed(
            d,
            engines[d].engine.model.kv_bytes_per_token(engines[d].engine.kv_dtype),
            statistics.median(runs[d]["long"]),
            statistics.median(runs[d]["many"]),
        )
        for d in dtypes
    ]

    q, s = {x.kv_dtype: x for x in quality}, {x.kv_dtype: x for x in speed}
    b, i = "bfloat16", "int8"
    print("| measure | bf16 KV | int8 KV | int8 / bf16 | goal |")
    print("|---|---|---|---|---|")
    ppl_ratio = q[i].perplexity / q[b].perplexity
    print(
        f"| perplexity, {len(ids)} held tokens | {q[b].perplexity:.3f} | {q[i].perplexity:.3f} | {ppl_ratio:.4f} | <= 1.01 |"
    )
    print(f"| top-1 agreement with bf16 KV | 1 | {q[i].top1_agreement:.4f} | | >= 0.99 |")
    print(
        f"| KV bytes per token | {s[b].kv_bytes_per_token:,} | {s[i].kv_bytes_per_token:,} | {s[i].kv_bytes_per_token / s[b].kv_bytes_per_token:.3f} | 0.5 |"
    )
    for label, key in (
        (f"decode tok/s, 1 stream at {args.long_context} context", "long_context_decode_tok_s"),
        (f"decode tok/s, {args.streams} streams", "concurrent_decode_tok_s"),
    ):
        vb, vi = getattr(s[b], key), getattr(s[i], key)
        print(f"| {label} | {vb:.1f} | {vi:.1f} | {vi / vb:.2f} | |")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = args.out or RESULTS_DIR / f"kv_cache_dtype-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "quality": [asdict(x) for x in quality],
                "speed": [asdict(x) for x in speed],
                "runs": runs,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
