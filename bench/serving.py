"""Serving benchmark: concurrent streaming clients against `vivace serve` vs the offline engine, one run.

The same requests (random prompts of exact token lengths, greedy, ignore_eos, seed 0) run twice:
  offline  `LLM.generate` in this process, with max_num_seqs = the client concurrency, so both sides
           batch at most that many sequences and the difference is what HTTP, SSE and the async
           front cost;
  serving  a `vivace serve` subprocess with the same engine defaults, driven by `--concurrency`
           streaming clients (the `vivace bench` load generator over the OpenAI-compatible API).
Reports output tokens/s of both and their ratio (target >= 0.9), and TTFT / inter-token latency
percentiles of the served requests. Prints a Markdown table and writes JSON to bench/results/.

    python bench/serving.py                          # 128 requests, 32 clients
    python bench/serving.py --requests 16 --concurrency 4 --input-len 32 --output-len 16   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import socket
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

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def workload(args: argparse.Namespace) -> list[WorkItem]:
    """The requests both sides run: greedy, exact prompt lengths, output lengths with ignore_eos."""
    items = random_workload(
        load_tokenizer(), args.requests, args.input_len, args.output_len, dist="uniform", spread=args.spread, seed=0
    )
    return [replace(item, request=replace(item.request, temperature=0.0)) for item in items]


def run_offline(items: list[WorkItem], concurrency: int, max_model_len: int) -> dict[str, Any]:
    """Output tokens/s of `LLM.generate` over every request at once."""
    from vivace.engine.config import SamplingParams
    from vivace.engine.llm import LLM

    llm = LLM(max_num_seqs=concurrency, max_model_len=max_model_len)
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


def start_server(port: int, max_model_len: int, log_path: Path) -> subprocess.Popen:
    """`vivace serve` on `port`, returned once /health answers."""
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "vivace.cli", "serve", "--port", str(port), "--max-model-len", str(max_model_len)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vivace serve exited; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError("vivace serve did not come up within 300 s")


async def run_serving(base_url: str, items: list[WorkItem], concurrency: int) -> dict[str, Any]:
    """The workload through `concurrency` streaming clients; throughput and latency percentiles."""
    provider = open_target(base_url)
    try:
        await warm_up(provider, items, count=concurrency, concurrency=concurrency)
        level = await run_level(
            provider, items, Load(concurrency=concurrency, num_requests=len(items)), tokenizer=load_tokenizer()
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
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--input-len", type=int, default=128, help="mean prompt tokens")
    parser.add_argument("--output-len", type=int, default=128, help="mean output tokens")
    parser.add_argument("--spread", type=float, default=0.5, help="lengths uniform in mean*(1 -/+ spread)")
    parser.add_argument("--max-model-len", type=int, default=2048)
    args = parser.parse_args()

    items = workload(args)
    offline = run_offline(items, args.concurrency, args.max_model_len)
    port = _free_port()
    RESULTS_DIR.mkdir(exist_ok=True)
    server = start_server(port, args.max_model_len, RESULTS_DIR / "serving_server.log")
    try:
        client_cpu = time.process_time()
        serving = asyncio.run(run_serving(f"http://127.0.0.1:{port}", items, args.concurrency))
        serving["client_cpu_s"] = time.process_time() - client_cpu
    finally:
        server.terminate()
        server.wait(timeout=60)
    if serving["failed"]:
        print(f"warning: {serving['failed']} request(s) failed: {serving['errors']}", file=sys.stderr)

    ratio = serving["output_tok_s"] / offline["output_tok_s"]
    print(f"client process CPU: {serving['client_cpu_s']:.1f} s over {serving['wall_s']:.1f} s of load")
    ms = lambda v: f"{v * 1000:.0f}"  # noqa: E731
    print(
        f"\n{args.requests} requests, prompt/output tokens uniform around {args.input_len}/{args.output_len} "
        f"(spread {args.spread}), greedy, ignore_eos; {args.concurrency} concurrent streaming clients; "
        f"{os.cpu_count()} CPU cores\n"
    )
    print("| | output tok/s | wall s | TTFT p50 / p99 ms | ITL p50 / p99 ms |")
    print("|---|---|---|---|---|")
    print(
        f"| offline `LLM.generate` (max_num_seqs={args.concurrency}) | {offline['output_tok_s']:.1f} | "
        f"{offline['wall_s']:.1f} | | |"
    )
    print(
        f"| `vivace serve`, {args.concurrency} SSE clients | {serving['output_tok_s']:.1f} | {serving['wall_s']:.1f} | "
        f"{ms(serving['ttft']['p50'])} / {ms(serving['ttft']['p99'])} | "
        f"{ms(serving['itl']['p50'])} / {ms(serving['itl']['p99'])} |"
    )
    print(f"\nserving / offline throughput: {ratio:.3f} (target >= 0.9)")
    out = RESULTS_DIR / "serving.json"
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "machine": platform.platform(),
                "offline": offline,
                "serving": serving,
                "ratio": ratio,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
