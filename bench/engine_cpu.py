"""CPU engine benchmark: vivace vs llama.cpp on the same GGUF, side by side in one run.

Three workloads, all greedy and ignoring EOS so every run produces exactly the requested tokens:
  single   one stream, a short prompt, 128 new tokens: decode tokens/s (and end-to-end tokens/s);
  offline  64 requests with prompt and output lengths uniform in 50..300 (random.Random(seed)):
           vivace `LLM.generate` batches them all; llama-cpp-python's Python API runs one sequence at a
           time, so its best configuration is the requests back to back on one context.
  prefill  one prompt of each of --prefill-lens random tokens (a fresh prompt every run: no prefix
           reuse), one output token: prompt tokens / time to that token. The peer is llama.cpp's
           `llama-server` (bench/peers/llama_server.sh; one slot, the same threads), asked over HTTP;
           runs alternate between the engines and lengths so drift in the machine hits all alike,
           after one untimed prompt per engine of the shortest length (llama-server's first prompt
           that size ran at about half the rate of the next) and, for vivace, once its KV pool is
           committed (llama-server clears its KV buffer before it serves).
Single and offline compare with llama-cpp-python (one engine loaded at a time). Prints a Markdown
table and writes JSON to bench/results/.

    python bench/engine_cpu.py                      # llama-cpp-python and vivace, single + offline
    python bench/engine_cpu.py --only vivace --part offline
    python bench/engine_cpu.py --part prefill       # vivace and llama-server, prompts of 512 and 4,096
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SHORT_PROMPT = "Write a short story about a robot who learns to paint."
RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class SingleResult:
    """One stream of `new_tokens` tokens, medians over repeats."""

    engine: str
    prompt_tokens: int
    new_tokens: int
    decode_tok_s: float  # (new_tokens - 1) / (time of last token - time of first token)
    e2e_tok_s: float  # new_tokens / (time of last token - request start)
    ttft_s: float
    runs: list[dict[str, float]] = field(default_factory=list)


@dataclass
class OfflineResult:
    """All requests of the offline workload, from first submission to last token."""

    engine: str
    num_requests: int
    prompt_tokens: int
    output_tokens: int
    wall_s: float

    @property
    def output_tok_s(self) -> float:
        return self.output_tokens / self.wall_s

    @property
    def total_tok_s(self) -> float:
        return (self.prompt_tokens + self.output_tokens) / self.wall_s


@dataclass
class Workload:
    """The offline requests: prompt token ids and how many tokens each must generate."""

    prompts: list[list[int]]
    output_lens: list[int]


def make_workload(num_requests: int, vocab_size: int, seed: int, lo: int = 50, hi: int = 300) -> Workload:
    """Random token prompts (ids clear of the special tokens at the start of the vocab), lengths in [lo, hi]."""
    rng = random.Random(seed)
    prompts, output_lens = [], []
    for _ in range(num_requests):
        n_in = rng.randint(lo, hi)
        prompts.append([rng.randrange(1000, vocab_size) for _ in range(n_in)])
        output_lens.append(rng.randint(lo, hi))
    return Workload(prompts, output_lens)


def gguf_vocab_size(path: str) -> int:
    """Number of tokens in the GGUF's vocabulary, read from its metadata."""
    from gguf import GGUFReader

    return len(GGUFReader(path).fields["tokenizer.ggml.tokens"].data)


def _single_from_runs(engine: str, prompt_tokens: int, new_tokens: int, runs: list[dict[str, float]]) -> SingleResult:
    return SingleResult(
        engine=engine,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        decode_tok_s=statistics.median(r["decode_tok_s"] for r in runs),
        e2e_tok_s=statistics.median(r["e2e_tok_s"] for r in runs),
        ttft_s=statistics.median(r["ttft_s"] for r in runs),
        runs=runs,
    )


def _run_stats(start: float, first: float, last: float, n: int) -> dict[str, float]:
    return {"decode_tok_s": (n - 1) / (last - first), "e2e_tok_s": n / (last - start), "ttft_s": first - start}


# --- vivace ---


class VivaceBench:
    def __init__(self, model: str, threads: int, quantization: str = "auto") -> None:
        from vivace.engine.llm import LLM

        self.llm = LLM(model, num_threads=threads, quantization=quantization)
        # Measured once the KV pool is committed, as llama-server clears its KV buffer before it serves: while
        # the pool's pages are being faulted in (up to a few seconds after start) steps run at about half rate.
        if (committing := self.llm.engine.runner.kv_prefault) is not None:
            committing.join()

    def single(self, prompt_ids: list[int], new_tokens: int, repeats: int) -> SingleResult:
        from vivace.engine.config import SamplingParams

        params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
        self.llm.generate([prompt_ids], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True), use_tqdm=False)
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            first = last = 0.0
            n = 0
            for out in self.llm.stream(prompt_ids, params):
                now = time.perf_counter()
                got = len(out.outputs[0].token_ids)
                if n == 0 and got > 0:
                    first = now
                if got > n:
                    n, last = got, now
            assert n == new_tokens, f"vivace produced {n} tokens, expected {new_tokens}"
            runs.append(_run_stats(start, first, last, n))
        return _single_from_runs("vivace", len(prompt_ids), new_tokens, runs)

    def offline(self, work: Workload) -> OfflineResult:
        from vivace.engine.config import SamplingParams

        params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in work.output_lens]
        self.llm.generate(work.prompts[:2], params[:2], use_tqdm=False)  # warm-up
        start = time.perf_counter()
        outs = self.llm.generate(work.prompts, params, use_tqdm=False)
        wall = time.perf_counter() - start
        produced = [len(o.outputs[0].token_ids) for o in outs]
        assert produced == work.output_lens, "vivace did not produce the requested output lengths"
        return OfflineResult("vivace", len(work.prompts), sum(map(len, work.prompts)), sum(produced), wall)

    def prefill_once(self, prompt_ids: list[int]) -> float:
        """Seconds from submitting one prompt to its one output token."""
        from vivace.engine.config import SamplingParams

        start = time.perf_counter()
        out = self.llm.generate(
            [prompt_ids], SamplingParams(temperature=0, max_tokens=1, ignore_eos=True), use_tqdm=False
        )
        wall = time.perf_counter() - start
        assert len(out[0].outputs[0].token_ids) == 1
        return wall


# --- llama.cpp ---


class LlamaServerPeer:
    """llama.cpp's llama-server on the same GGUF, one slot of `context` tokens, `threads` threads."""

    def __init__(self, model: str, context: int, threads: int) -> None:
        import httpx
        from serving import _free_port, start_llama_server

        port = _free_port()
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        log_path = RESULTS_DIR / "engine_cpu_llama_server.log"
        self.process, _ = start_llama_server(model, port, context, 1, threads, log_path)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)

    def prefill_once(self, prompt_ids: list[int]) -> float:
        """Seconds from sending one prompt (token ids, prompt cache off) to its one-token completion."""
        body = {"prompt": prompt_ids, "n_predict": 1, "cache_prompt": False, "temperature": 0}
        start = time.perf_counter()
        reply = self.client.post("/completion", json=body)
        wall = time.perf_counter() - start
        reply.raise_for_status()
        assert reply.json()["timings"]["prompt_n"] == len(prompt_ids)
        return wall

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(timeout=30)


def run_prefill(
    model: str, names: list[str], lens: list[int], repeats: int, threads: int, quantization: str, seed: int
) -> dict[str, Any]:
    """Prefill tok/s per engine and prompt length (median over `repeats`), runs interleaved."""
    vocab = gguf_vocab_size(model)
    rng = random.Random(seed)
    engines: dict[str, Any] = {}
    if "vivace" in names:
        engines["vivace"] = VivaceBench(model, threads, quantization)
    if "llama-server" in names:
        engines["llama-server"] = LlamaServerPeer(model, max(lens) + 16, threads)
    try:
        for engine in engines.values():  # warm-up at the shortest length: a first prompt that size runs cold
            engine.prefill_once([rng.randrange(1000, vocab) for _ in range(min(lens))])
        walls: dict[str, dict[int, list[float]]] = {name: {n: [] for n in lens} for name in engines}
        for _ in range(repeats):
            for n in lens:
                for name, engine in engines.items():
                    walls[name][n].append(engine.prefill_once([rng.randrange(1000, vocab) for _ in range(n)]))
                    print(f"[{name}] prefill {n}: {n / walls[name][n][-1]:.1f} tok/s", file=sys.stderr)
    finally:
        if "llama-server" in engines:
            engines["llama-server"].close()
    return {
        name: {n: {"tok_s": n / statistics.median(w), "walls_s": w} for n, w in per_len.items()}
        for name, per_len in walls.items()
    }


def prefill_table(prefill: dict[str, Any], lens: list[int]) -> str:
    """Prefill tok/s by prompt length, the ratio to llama-server, and each engine's long/short rate."""
    v, p = prefill.get("vivace"), prefill.get("llama-server")

    def rate(result: dict[int, Any] | None, n: int) -> float | None:
        return result[n]["tok_s"] if result else None

    rows = ["| prompt tokens | vivace tok/s | llama-server tok/s | vivace / llama-server |", "|---|---|---|---|"]
    for n in lens:
        rows.append(f"| {n} | {_fmt(rate(v, n))} | {_fmt(rate(p, n))} | {_ratio(rate(v, n), rate(p, n))} |")
    lo, hi = min(lens), max(lens)
    rows.append(
        f"| rate at {hi} / rate at {lo} | {_ratio(rate(v, hi), rate(v, lo))} | {_ratio(rate(p, hi), rate(p, lo))} | |"
    )
    return "\n".join(rows)


class LlamaCppBench:
    def __init__(self, model: str, threads: int, n_ctx: int) -> None:
        try:
            from llama_cpp import Llama
        except ImportError:
            sys.exit("llama-cpp-python is not installed: pip install -e '.[llamacpp]' (builds from source)")
        self.llm = Llama(
            model_path=model, n_ctx=n_ctx, n_batch=512, n_threads=threads, n_threads_batch=threads, verbose=False
        )
        self.version = __import__("llama_cpp").__version__

    def _generate(self, prompt_ids: list[int], n: int) -> tuple[float, float, int]:
        """Greedy; `Llama.generate` never stops by itself (EOS is the caller's check), so EOS is ignored."""
        first = last = 0.0
        count = 0
        for _ in self.llm.generate(prompt_ids, temp=0.0, reset=True):
            last = time.perf_counter()
            if count == 0:
                first = last
            count += 1
            if count == n:
                break
        return first, last, count

    def single(self, prompt_ids: list[int], new_tokens: int, repeats: int) -> SingleResult:
        self._generate(prompt_ids, 8)
        runs = []
        for _ in range(repeats):
            self.llm.reset()  # no prefix reuse from the previous run: same work as vivace's fresh request
            start = time.perf_counter()
            first, last, n = self._generate(prompt_ids, new_tokens)
            runs.append(_run_stats(start, first, last, n))
        return _single_from_runs(f"llama.cpp {self.version}", len(prompt_ids), new_tokens, runs)

    def offline(self, work: Workload) -> OfflineResult:
        self._generate(work.prompts[0], 8)
        self.llm.reset()
        produced = 0
        start = time.perf_counter()
        for prompt, n in zip(work.prompts, work.output_lens, strict=True):
            produced += self._generate(prompt, n)[2]
        wall = time.perf_counter() - start
        assert produced == sum(work.output_lens)
        return OfflineResult(
            f"llama.cpp {self.version}", len(work.prompts), sum(map(len, work.prompts)), produced, wall
        )


# --- report ---


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def _fmt(x: float | None) -> str:
    return f"{x:.1f}" if x is not None else "-"


def markdown_table(
    single: dict[str, SingleResult], offline: dict[str, OfflineResult], num_requests: int, new_tokens: int
) -> str:
    rows = ["| workload | metric | vivace | llama.cpp | vivace / llama.cpp |", "|---|---|---|---|---|"]

    def row(workload: str, metric: str, v: float | None, c: float | None) -> None:
        rows.append(f"| {workload} | {metric} | {_fmt(v)} | {_fmt(c)} | {_ratio(v, c)} |")

    if single:
        v, c = single.get("vivace"), single.get("llamacpp")
        name = f"single stream, {new_tokens} new tokens"
        row(name, "decode tok/s", v and v.decode_tok_s, c and c.decode_tok_s)
        row(name, "end-to-end tok/s", v and v.e2e_tok_s, c and c.e2e_tok_s)
    if offline:
        v, c = offline.get("vivace"), offline.get("llamacpp")
        name = f"{num_requests} requests, in/out 50..300 tokens"
        row(name, "output tok/s", v and v.output_tok_s, c and c.output_tok_s)
        row(name, "total tok/s", v and v.total_tok_s, c and c.total_tok_s)
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="GGUF file or packaged model name: smollm2 (default), gemma3")
    ap.add_argument("--only", choices=["vivace", "llamacpp"], help="run one engine only")
    ap.add_argument("--part", choices=["single", "offline", "prefill", "all"], default="all")
    ap.add_argument("--prefill-lens", default="512,4096", help="prefill: prompt lengths, comma-separated")
    ap.add_argument("--prefill-repeats", type=int, default=2, help="prefill: runs per engine and length (median)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quantization", default="auto", help="vivace's weight format (auto = gguf on CPU, int8, none)")
    ap.add_argument("--new-tokens", type=int, default=128, help="single stream: tokens to generate")
    ap.add_argument("--repeats", type=int, default=3, help="single stream: runs (median reported)")
    ap.add_argument("--num-requests", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="JSON output file (default: bench/results/engine_cpu-<time>.json)")
    args = ap.parse_args()

    from vivace.engine.loaders.default_model import resolve_model_path

    model = resolve_model_path(args.model)
    if args.part == "prefill":
        lens = [int(n) for n in args.prefill_lens.split(",")]
        names = {"vivace": ["vivace"], "llamacpp": ["llama-server"]}.get(args.only, ["vivace", "llama-server"])
        prefill = run_prefill(model, names, lens, args.prefill_repeats, args.threads, args.quantization, args.seed)
        table = prefill_table(prefill, lens)
        print(table)
        out = args.out or RESULTS_DIR / f"engine_cpu_prefill-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), "model": model, "threads": args.threads}
        out.write_text(
            json.dumps({**record, "load_average": os.getloadavg()[0], "prefill": prefill, "table": table}, indent=2)
        )
        print(f"wrote {out}", file=sys.stderr)
        return
    engines = [args.only] if args.only else ["llamacpp", "vivace"]
    parts = ["single", "offline"] if args.part == "all" else [args.part]
    work = make_workload(args.num_requests, gguf_vocab_size(model), args.seed)

    load_before = os.getloadavg()[0]
    if load_before > 0.5 * (os.cpu_count() or 1):
        print(
            f"warning: load average {load_before:.1f} on {os.cpu_count()} cores; other work will skew the numbers",
            file=sys.stderr,
        )
    single: dict[str, SingleResult] = {}
    offline: dict[str, OfflineResult] = {}
    versions: dict[str, str] = {}
    for name in engines:  # one engine loaded at a time so they never compete for the two cores
        print(f"[{name}] loading {model}", file=sys.stderr)
        if name == "vivace":
            bench: Any = VivaceBench(model, args.threads, args.quantization)
            prompt_ids = bench.llm.tokenizer.encode(SHORT_PROMPT)
            import vivace

            versions[name] = getattr(vivace, "__version__", "dev")
        else:
            bench = LlamaCppBench(model, args.threads, n_ctx=1024)
            prompt_ids = bench.llm.tokenize(SHORT_PROMPT.encode(), add_bos=True)
            versions[name] = bench.version
        if "single" in parts:
            single[name] = bench.single(prompt_ids, args.new_tokens, args.repeats)
            print(f"[{name}] single: {single[name].decode_tok_s:.1f} decode tok/s", file=sys.stderr)
        if "offline" in parts:
            offline[name] = bench.offline(work)
            r = offline[name]
            print(
                f"[{name}] offline: {r.output_tok_s:.1f} output tok/s, {r.total_tok_s:.1f} total tok/s "
                f"({r.wall_s:.1f} s)",
                file=sys.stderr,
            )
        del bench

    table = markdown_table(single, offline, args.num_requests, args.new_tokens)
    print(table)
    result = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "model": model,
        "threads": args.threads,
        "load_average": {"before": load_before, "after": os.getloadavg()[0]},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": platform.python_version(),
        },
        "versions": versions,
        "single": {k: asdict(v) for k, v in single.items()},
        "offline": {
            k: {**asdict(v), "output_tok_s": v.output_tok_s, "total_tok_s": v.total_tok_s} for k, v in offline.items()
        },
        "ratios": {
            "single_decode": single["vivace"].decode_tok_s / single["llamacpp"].decode_tok_s
            if {"vivace", "llamacpp"} <= single.keys()
            else None,
            "offline_output": offline["vivace"].output_tok_s / offline["llamacpp"].output_tok_s
            if {"vivace", "llamacpp"} <= offline.keys()
            else None,
            "offline_total": offline["vivace"].total_tok_s / offline["llamacpp"].total_tok_s
            if {"vivace", "llamacpp"} <= offline.keys()
            else None,
        },
        "table": table,
    }
    out = args.out or RESULTS_DIR / f"engine_cpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
