"""Serving benchmark: concurrent streaming clients against `vivace serve` vs the offline engine, one run.

The same requests (random prompts of exact token lengths, greedy, ignore_eos, seed 0) run twice:
  offline  `LLM.generate` in this process, with max_num_seqs = the client concurrency, so both sides
           batch at most that many sequences and the difference is what HTTP, SSE and the async
           front cost;
  serving  a `vivace serve` subprocess with the same engine defaults, driven by `--concurrency`
           streaming clients (the `vivace bench` load generator over the OpenAI-compatible API).
  peer     with `--peer llama-server`: llama.cpp's server (built by bench/peers/llama_server.sh) on the
           same GGUF, one slot per client, the same context per sequence, `--threads` threads (default
           one per core, as vivace serve's engine uses), driven by the same clients.
`--model` picks the GGUF every side runs (a packaged model's name, e.g. gemma3, or a path; default the
packaged SmolLM2-135M); prompts are built and outputs counted with that model's tokenizer.
Reports output tokens/s and their ratios (serving / offline target >= 0.9), TTFT / inter-token latency
percentiles of the served requests, and each server's start-up (launch to /health 200). Prints a
Markdown table and writes JSON to bench/results/.

    python bench/serving.py                          # 128 requests, 32 clients
    python bench/serving.py --requests 16 --concurrency 4 --input-len 32 --output-len 16   # smoke
    python bench/serving.py --peer llama-server --no-offline --requests 8 --concurrency 1   # single stream
    python bench/serving.py --peer llama-server --no-offline --pairs 3   # alternate 3 times, median ratio
    python bench/serving.py --model gemma3 --peer llama-server --no-offline --requests 64 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from vivace.bench.load import Load, run_level, warm_up
from vivace.bench.metrics import summarize
from vivace.bench.target import open_target
from vivace.bench.tokens import load_tokenizer
from vivace.bench.workloads import WorkItem, random_workload
from vivace.engine.loaders.default_model import resolve_model_path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def workload(args: argparse.Namespace) -> list[WorkItem]:
    """The requests both sides run: greedy, exact prompt lengths, output lengths with ignore_eos."""
    items = random_workload(
        load_tokenizer(args.model),
        args.requests,
        args.input_len,
        args.output_len,
        dist="uniform",
        spread=args.spread,
        seed=0,
    )
    return [replace(item, request=replace(item.request, temperature=0.0)) for item in items]


def run_offline(model: str, items: list[WorkItem], concurrency: int, max_model_len: int) -> dict[str, Any]:
    """Output tokens/s of `LLM.generate` over every request at once."""
    from vivace.engine.config import SamplingParams
    from vivace.engine.llm import LLM

    llm = LLM(model, max_num_seqs=concurrency, max_model_len=max_model_len)
    params = [SamplingParams(temperature=0.0, max_tokens=it.request.max_tokens, ignore_eos=True) for it in items]
    # Warm-up as the server gets it: the first `concurrency` requests at once (kernels meet their batch sizes).
    llm.generate([it.request.prompt for it in items[:concurrency]], params[:concurrency], use_tqdm=False)
    start = time.perf_counter()
    outputs = llm.generate([it.request.prompt for it in items], params, use_tqdm=False)
    wall = time.perf_counter() - start
    tokens = sum(o.num_generated_tokens for o in outputs)
    del llm, outputs
    gc.collect()
    return {"wall_s": wall, "output_tokens": tokens, "output_tok_s": tokens / wall}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, max_model_len: int, log_path: Path) -> tuple[subprocess.Popen, float]:
    """`vivace serve` on `port` (torch's default threads: one per core), returned once /health answers, with the seconds that took."""
    command = [sys.executable, "-m", "vivace.cli", "serve", "--model", model, "--port", str(port)]
    command += ["--max-model-len", str(max_model_len)]
    return launch(command, port, log_path)


def start_llama_server(
    model: str, port: int, max_model_len: int, slots: int, threads: int, log_path: Path
) -> tuple[subprocess.Popen, float]:
    """llama.cpp's llama-server on the GGUF `model`: `slots` parallel slots of `max_model_len` tokens each."""
    built = subprocess.run(
        ["bash", str(Path(__file__).resolve().parent / "peers" / "llama_server.sh")],
        check=True,
        capture_output=True,
        text=True,
    )
    binary = os.path.join(built.stdout.strip(), "llama-server")
    command = [binary, "-m", model, "--port", str(port), "-t", str(threads), "-tb", str(threads)]
    command += ["-np", str(slots), "-c", str(max_model_len * slots), "--no-webui"]
    return launch(command, port, log_path)


def launch(command: list[str], port: int, log_path: Path) -> tuple[subprocess.Popen, float]:
    """Start a server; return it once /health answers 200, with the seconds from launch to then."""
    log = open(log_path, "w")
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = start + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[0]} exited; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process, time.monotonic() - start
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{command[0]} did not come up within 300 s")


def serve_and_measure(
    start: tuple[subprocess.Popen, float], port: int, items: list[WorkItem], concurrency: int, model: str
) -> dict[str, Any]:
    """The workload against a started server (stopped afterwards), plus its start-up time and the client's CPU."""
    server, startup_s = start
    try:
        client_cpu = time.process_time()
        result = asyncio.run(run_serving(f"http://127.0.0.1:{port}", items, concurrency, model))
        result["client_cpu_s"] = time.process_time() - client_cpu
        result["startup_s"] = startup_s
    finally:
        server.terminate()
        server.wait(timeout=60)
    if result["failed"]:
        print(f"warning: {result['failed']} request(s) failed: {result['errors']}", file=sys.stderr)
    return result


async def run_serving(base_url: str, items: list[WorkItem], concurrency: int, model: str) -> dict[str, Any]:
    """The workload through `concurrency` streaming clients; throughput and latency percentiles (tokens
    counted with `model`'s tokenizer where a server reports none)."""
    provider = open_target(base_url)
    try:
        await warm_up(provider, items, count=concurrency, concurrency=concurrency)
        level = await run_level(
            provider, items, Load(concurrency=concurrency, num_requests=len(items)), tokenizer=load_tokenizer(model)
        )
    finally:
        await provider.aclose()
    s = summarize(level)
    return {
        "wall_s": s.duration,
        "output_tokens": s.output_tokens,
        "output_tok_s": s.output_throughput,
        "completed": s.completed,
        "failed": s.failed,
        "ttft": s.ttft.to_dict(),
        "itl": s.itl.to_dict(),
        "tpot": s.tpot.to_dict(),
        "errors": sorted({r.error for r in level.records if r.error}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="GGUF file or packaged model name: smollm2 (default), gemma3")
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--input-len", type=int, default=128, help="mean prompt tokens")
    parser.add_argument("--output-len", type=int, default=128, help="mean output tokens")
    parser.add_argument("--spread", type=float, default=0.5, help="lengths uniform in mean*(1 -/+ spread)")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="llama-server's threads (vivace: one per core)"
    )
    parser.add_argument("--peer", choices=["none", "llama-server"], default="none")
    parser.add_argument("--no-offline", action="store_true", help="skip the offline `LLM.generate` run")
    parser.add_argument(
        "--pairs", type=int, default=1, help="with --peer: vivace and the peer alternate this many times"
    )
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs must be positive")
    args.model = resolve_model_path(args.model)

    items = workload(args)
    offline = None if args.no_offline else run_offline(args.model, items, args.concurrency, args.max_model_len)
    RESULTS_DIR.mkdir(exist_ok=True)
    runs: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    for _ in range(args.pairs if args.peer != "none" else 1):  # alternating, so drift hits both alike
        port = _free_port()
        start = start_server(args.model, port, args.max_model_len, RESULTS_DIR / "serving_server.log")
        serving = serve_and_measure(start, port, items, args.concurrency, args.model)
        peer = None
        if args.peer == "llama-server":
            port = _free_port()
            log_path = RESULTS_DIR / "serving_llama_server.log"
            start = start_llama_server(args.model, port, args.max_model_len, args.concurrency, args.threads, log_path)
            peer = serve_and_measure(start, port, items, args.concurrency, args.model)
        runs.append((serving, peer))
    serving, peer = runs[-1]  # the single-run lines and the JSON's top level report the last pair

    ratio = serving["output_tok_s"] / offline["output_tok_s"] if offline else None
    print(f"client process CPU: {serving['client_cpu_s']:.1f} s over {serving['wall_s']:.1f} s of load")
    ms = lambda v: f"{v * 1000:.0f}"  # noqa: E731
    print(
        f"\n{os.path.basename(args.model)}: {args.requests} requests, prompt/output tokens uniform around {args.input_len}/{args.output_len} "
        f"(spread {args.spread}), greedy, ignore_eos; {args.concurrency} concurrent streaming clients; "
        f"{os.cpu_count()} CPU cores\n"
    )
    print("| | output tok/s | wall s | TTFT p50 / p99 ms | ITL p50 / p99 ms | start-up s |")
    print("|---|---|---|---|---|---|")
    if offline:
        print(
            f"| offline `LLM.generate` (max_num_seqs={args.concurrency}) | {offline['output_tok_s']:.1f} | "
            f"{offline['wall_s']:.1f} | | | |"
        )
    for pair, (ours, theirs) in enumerate(runs, 1):
        for name, row in [("`vivace serve`", ours), ("llama-server", theirs)]:
            if row is None:
                continue
            label = f"{name}, {args.concurrency} SSE clients" + (f", pair {pair}" if len(runs) > 1 else "")
            print(
                f"| {label} | {row['output_tok_s']:.1f} | {row['wall_s']:.1f} | "
                f"{ms(row['ttft']['p50'])} / {ms(row['ttft']['p99'])} | "
                f"{ms(row['itl']['p50'])} / {ms(row['itl']['p99'])} | {row['startup_s']:.2f} |"
            )
    if ratio is not None:
        print(f"\nserving / offline throughput: {ratio:.3f} (target >= 0.9)")
    if len(runs) > 1:
        ratios = [ours["output_tok_s"] / theirs["output_tok_s"] for ours, theirs in runs if theirs is not None]
        listed = ", ".join(f"{r:.2f}x" for r in ratios)
        print(f"vivace serve / llama-server output tok/s per pair: {listed}; median {statistics.median(ratios):.2f}x")
    if peer is not None:
        print(
            f"vivace serve / llama-server: output tok/s {serving['output_tok_s'] / peer['output_tok_s']:.2f}x, "
            f"ITL p50 {peer['itl']['p50'] / serving['itl']['p50']:.2f}x (>1 = vivace faster), "
            f"TTFT p50 {peer['ttft']['p50'] / serving['ttft']['p50']:.2f}x, "
            f"start-up {serving['startup_s']:.2f} s vs {peer['startup_s']:.2f} s"
        )
    out = RESULTS_DIR / "serving.json"
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "machine": platform.platform(),
                "offline": offline,
                "serving": serving,
                "llama_server": peer,
                "pairs": [{"serving": s, "llama_server": p} for s, p in runs],
                "ratio": ratio,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
