"""INT8 KV cache vs the default KV cache: quality, KV bytes and decode speed, side by side in one run.

On the CPU the engine computes in float32 and keeps its KV cache in bfloat16 by default
(`kv_cache_dtype="auto"`), so bfloat16 is the baseline int8 is compared with; float32 KV (exact for
float32 compute) is scored too, to show what each storage format costs against no rounding at all.

Quality is measured teacher-forced through the public API (`SamplingParams(prompt_logprobs=1)`) on a
held text nobody wrote for this benchmark: the first `--held-tokens` tokens of the Python Language
Reference's "Compound statements" chapter, as Python's own `pydoc_data` ships it. Reported:
perplexity per KV dtype, and the fraction of positions where an engine's top-1 token equals the
bfloat16-KV (and the float32-KV) engine's.
Speed: decode tokens/s of one stream at a long context, and of many concurrent streams. Every
prompt is prefilled once beforehand, so in the timed runs the prefix cache serves it and all
streams decode together from the first step; the rate counts the tokens after every stream has its
first one. The two engines alternate `--pairs` times and medians are reported.
In the CPU default the linear layers quantize their input activations to int8 (GGUF blocks), which
turns any small change upstream (bf16 vs float32 KV included) into rounding flips: the float32-KV
column shows that floor. `--quantization none` (float32 weights, no activation quantization)
measures what the KV format alone costs.

    python bench/kv_cache_dtype.py                       # the packaged SmolLM2-135M
    python bench/kv_cache_dtype.py --model gemma3
    python bench/kv_cache_dtype.py --quantization none --part quality
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from pydoc_data.topics import topics

from vivace.engine.config import EngineConfig, SamplingParams
from vivace.engine.llm import LLM

RESULTS_DIR = Path(__file__).resolve().parent / "results"
HELD_TOPIC = "compound"  # pydoc_data.topics key: "Compound statements", ~50k characters of prose and code
BASELINE, INT8, EXACT = "bfloat16", "int8", "float32"


@dataclass
class Quality:
    kv_dtype: str
    tokens: int
    perplexity: float
    top1_vs_bf16: float  # fraction of positions whose top-1 equals the bfloat16-KV engine's
    top1_vs_fp32: float  # the same against the float32-KV engine


@dataclass
class Speed:
    kv_dtype: str
    kv_bytes_per_token: int
    long_context_decode_tok_s: float  # median of the runs below
    concurrent_decode_tok_s: float
    long_context_runs: list[float]
    concurrent_runs: list[float]


def scored_prompt(llm: LLM, ids: list[int]) -> tuple[list[float], list[int]]:
    """Logprob of every token after the first, and the engine's top-1 token at each of those positions."""
    out = llm.generate([ids], SamplingParams(max_tokens=1, prompt_logprobs=1), use_tqdm=False)[0]
    scores = out.prompt_logprobs or []
    assert len(scores) == len(ids) - 1, f"{len(scores)} prompt logprobs for {len(ids)} prompt tokens"
    return [t.logprob for t in scores], [t.top[0][0] for t in scores]


def agreement(a: list[int], b: list[int]) -> float:
    """Fraction of positions where two top-1 sequences agree."""
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def prefill(llm: LLM, prompts: list[list[int]]) -> None:
    """Run every prompt once (one token each), so the prefix cache holds their KV for the timed runs."""
    llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=1), use_tqdm=False)


def decode_rate(llm: LLM, prompts: list[list[int]], new_tokens: int) -> float:
    """Tokens/s over the steps after every stream has produced its first token."""
    engine = llm.engine
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
    assert t_all is not None and sum(produced.values()) - count_at >= new_tokens // 2, "too few timed tokens"
    return (sum(produced.values()) - count_at) / (time.perf_counter() - t_all)


def measure_speed(engines: dict[str, LLM], kv_bytes: dict[str, int], args: argparse.Namespace) -> dict[str, Speed]:
    """Decode rates of each engine, one long stream and many concurrent ones, alternating engines."""
    vocab = engines[BASELINE].engine.model_config.vocab_size
    long_prompt = [(7 * i + 11) % (vocab - 1000) + 500 for i in range(args.long_context)]
    stream_prompts = [
        [(13 * i + 5 * s + 3) % (vocab - 1000) + 500 for i in range(args.stream_prompt)] for s in range(args.streams)
    ]
    for llm in engines.values():
        prefill(llm, [long_prompt, *stream_prompts])
    runs: dict[str, dict[str, list[float]]] = {d: {"long": [], "many": []} for d in engines}
    for _ in range(args.pairs):
        for d, llm in engines.items():  # alternating, so drift on the machine hits both alike
            runs[d]["long"].append(decode_rate(llm, [long_prompt], args.new_tokens))
            runs[d]["many"].append(decode_rate(llm, stream_prompts, args.new_tokens))
    return {
        d: Speed(d, kv_bytes[d], statistics.median(r["long"]), statistics.median(r["many"]), r["long"], r["many"])
        for d, r in runs.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model name or GGUF path (default: the packaged SmolLM2-135M)")
    ap.add_argument("--held-tokens", type=int, default=4096, help="tokens of the held text scored")
    ap.add_argument("--long-context", type=int, default=4096, help="prompt tokens of the single long stream")
    ap.add_argument("--streams", type=int, default=64, help="concurrent streams")
    ap.add_argument("--stream-prompt", type=int, default=256, help="prompt tokens of each concurrent stream")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--kv-cache-memory", type=int, default=1 << 30, help="KV budget in bytes, every engine")
    ap.add_argument("--quantization", default="auto", help="weights: auto (the CPU default, GGUF blocks), none, int8")
    ap.add_argument("--part", choices=["quality", "speed", "all"], default="all")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    def engine(kv_dtype: str) -> LLM:
        return LLM(
            args.model,
            kv_cache_dtype=kv_dtype,
            quantization=args.quantization,
            kv_cache_memory_bytes=args.kv_cache_memory,
            max_num_seqs=args.streams,
            max_model_len=max(args.held_tokens, args.long_context + args.new_tokens) + 16,
        )

    engines = {d: engine(d) for d in (BASELINE, INT8)}
    kv_bytes = {d: llm.engine.model.kv_bytes_per_token(llm.engine.kv_dtype) for d, llm in engines.items()}
    default_kv = EngineConfig(model=args.model).resolved_kv_cache_dtype  # what kv_cache_dtype='auto' picks
    quality: dict[str, Quality] = {}
    if args.part in ("quality", "all"):
        ids = engines[BASELINE].engine.tokenize_prompt(topics[HELD_TOPIC])[: args.held_tokens]
        scored = {d: scored_prompt(llm, ids) for d, llm in engines.items()}
        exact = engine(EXACT)  # quality only: scored, then dropped before the timed runs
        scored[EXACT] = scored_prompt(exact, ids)
        kv_bytes[EXACT] = exact.engine.model.kv_bytes_per_token(exact.engine.kv_dtype)
        del exact
        gc.collect()
        for d in (EXACT, BASELINE, INT8):
            ppl = math.exp(-statistics.fmean(scored[d][0]))
            top1 = scored[d][1]
            quality[d] = Quality(
                d, len(ids), ppl, agreement(top1, scored[BASELINE][1]), agreement(top1, scored[EXACT][1])
            )
    speed = measure_speed(engines, kv_bytes, args) if args.part in ("speed", "all") else {}

    model = engines[BASELINE].engine.config.model or "smollm2"
    print(f"model: {model}; weights: {args.quantization}; KV dtype kv_cache_dtype='auto' picks: {default_kv}\n")
    print("| measure | float32 KV | bf16 KV | int8 KV | int8 / bf16 | goal |")
    print("|---|---|---|---|---|---|")
    if quality:
        q = quality
        ppl = [q[d].perplexity for d in (EXACT, BASELINE, INT8)]
        ratio = ppl[2] / ppl[1]
        print(
            f"| perplexity, {q[INT8].tokens} held tokens | {ppl[0]:.4f} | {ppl[1]:.4f} | {ppl[2]:.4f} | "
            f"{ratio:.4f} | <= 1.01: {'met' if ratio <= 1.01 else '**missed**'} |"
        )
        agree = q[INT8].top1_vs_bf16
        print(
            f"| top-1 agreement with bf16 KV | {q[EXACT].top1_vs_bf16:.4f} | 1 | {agree:.4f} | | "
            f">= 0.99: {'met' if agree >= 0.99 else '**missed**'} |"
        )
        print(
            f"| top-1 agreement with float32 KV | 1 | {q[BASELINE].top1_vs_fp32:.4f} | {q[INT8].top1_vs_fp32:.4f} | | |"
        )
    bytes_ratio = kv_bytes[INT8] / kv_bytes[BASELINE]
    print(
        f"| KV bytes per token | {kv_bytes.get(EXACT, 2 * kv_bytes[BASELINE]):,} | {kv_bytes[BASELINE]:,} | "
        f"{kv_bytes[INT8]:,} | {bytes_ratio:.3f} | 0.5: {'met' if bytes_ratio <= 0.5 else '**missed**'} "
        "(the float16 scale per row: 2 bytes per head_dim values) |"
    )
    labels = {
        "long_context_decode_tok_s": f"decode tok/s, 1 stream at {args.long_context} context",
        "concurrent_decode_tok_s": f"decode tok/s, {args.streams} streams of {args.stream_prompt}+ tokens",
    }
    for key, label in labels.items() if speed else ():
        vb, vi = getattr(speed[BASELINE], key), getattr(speed[INT8], key)
        print(f"| {label} | | {vb:.1f} | {vi:.1f} | {vi / vb:.2f} | |")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = args.out or RESULTS_DIR / f"kv_cache_dtype-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "default_kv_dtype": default_kv,
                "quality": [asdict(x) for x in quality.values()],
                "speed": [asdict(x) for x in speed.values()],
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
