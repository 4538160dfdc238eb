"""Soak benchmark: one `vivace serve` under mixed load for a bounded time; does it stay healthy?

Against one server subprocess, for `--duration` seconds (2 minutes by default), all at once:
  streams      `--streams` clients streaming completions and chats (8-48 tokens), one in
               `--cancel-every` hanging up at a random point of its stream;
  bad bodies   one client sending hostile bodies in turn: JSON nested 50,000 deep, lone surrogates,
               n past its cap, 1,000 prompts, text/plain bodies, a classify template with format specs,
               a body cut off mid-send;
  metrics      /metrics polled every `--metrics-every` s (0.5; 0 = off); /health probed every 0.25 s
               (its latency is reported).
Every `--sample-every` seconds it records KV blocks in use, requests running and the server's RSS.
At the end the load stops and the server must drain to zero running requests and zero KV blocks.

Reports requests served, responses and errors by class, /health latency percentiles, and the
KV/RSS samples as Markdown tables; writes JSON to bench/results/.

    python bench/soak.py                       # 120 s, 16 streams
    python bench/soak.py --duration 30 --streams 4   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PROMPTS = ["Tell me about the sea.", "Write a haiku about rain.", "List three fruits.", "Explain gravity briefly."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, max_model_len: int, log_path: Path) -> subprocess.Popen:
    """`vivace serve` on `port`, returned once /health answers."""
    log = open(log_path, "w")
    command = [sys.executable, "-m", "vivace.cli", "serve", "--port", str(port), "--max-model-len", str(max_model_len)]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
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


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` in MiB (Linux)."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024  # type: ignore[union-attr]


def gauge(metrics: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", metrics, re.M)
    return float(match.group(1)) if match else float("nan")


class Tally:
    """Outcomes by class: "<kind> <status>" or "<kind> <ExceptionName>"."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, kind: str, outcome: int | str) -> None:
        self.counts[f"{kind} {outcome}"] += 1


async def streamer(client: httpx.AsyncClient, model: str, stop_at: float, cancel_every: int, tally: Tally) -> None:
    rng = random.Random()
    while time.monotonic() < stop_at:
        chat = rng.random() < 0.5
        prompt = rng.choice(PROMPTS)
        body: dict[str, Any] = {"model": model, "max_tokens": rng.randint(8, 48), "stream": True, "temperature": 0.7}
        if chat:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        cancel_after = rng.randint(1, 10) if rng.randrange(cancel_every) == 0 else None
        path = "/v1/chat/completions" if chat else "/v1/completions"
        try:
            async with client.stream("POST", path, json=body) as response:
                chunks = 0
                done = False
                async for line in response.aiter_lines():
                    chunks += line.startswith("data: ")
                    done = done or line == "data: [DONE]"
                    if cancel_after is not None and chunks >= cancel_after:
                        break
                if cancel_after is not None and not done:
                    tally.add("stream", "cancelled")
                elif response.status_code == 200 and not done:
                    tally.add("stream", "ended without [DONE]")
                else:
                    tally.add("stream", response.status_code)
        except httpx.HTTPError as e:
            tally.add("stream", type(e).__name__)


def hostile_bodies(model: str) -> list[tuple[str, bytes, str]]:
    """(path, raw body, content type) of each kind of bad request the soak sends."""
    deep = b'{"model": "m", "prompt": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    marker = "@surrogate@"
    surrogate = json.dumps({"model": model, "messages": [{"role": "user", "content": marker}]})
    surrogate_body = surrogate.replace(marker, "\\ud800").encode()
    return [
        ("/v1/completions", deep, "application/json"),
        ("/v1/chat/completions", surrogate_body, "application/json"),
        ("/v1/completions", json.dumps({"model": model, "prompt": "x", "n": 10_000}).encode(), "application/json"),
        ("/v1/completions", json.dumps({"model": model, "prompt": ["x"] * 1000}).encode(), "application/json"),
        ("/v1/chat/completions", json.dumps({"model": model, "messages": []}).encode(), "text/plain"),
        (
            "/v1/classify",
            json.dumps({"model": model, "text": "x", "labels": ["a", "b"], "template": "{text:>1000000000}"}).encode(),
            "application/json",
        ),
        (
            "/v1/completions",
            json.dumps({"model": model, "prompt": "x", "seed": 2**64 - 1, "n": 2}).encode(),
            "application/json",
        ),
    ]


async def cut_off_body(port: int) -> None:
    """A request whose body never finishes: the client leaves mid-send."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n")
    writer.write(b'content-length: 500\r\n\r\n{"model": ')
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.transport.abort()


async def bad_bodies(client: httpx.AsyncClient, port: int, model: str, stop_at: float, tally: Tally) -> None:
    bodies = hostile_bodies(model)
    i = 0
    while time.monotonic() < stop_at:
        path, raw, content_type = bodies[i % len(bodies)]
        i += 1
        try:
            response = await client.post(path, content=raw, headers={"content-type": content_type})
            tally.add("bad body", response.status_code)
        except httpx.HTTPError as e:
            tally.add("bad body", type(e).__name__)
        if i % len(bodies) == 0:
            await cut_off_body(port)
            tally.add("bad body", "cut off")
        await asyncio.sleep(0.1)


async def poll(client: httpx.AsyncClient, path: str, every: float, stop_at: float, tally: Tally, times: list) -> None:
    while time.monotonic() < stop_at:
        started = time.perf_counter()
        try:
            response = await client.get(path)
            times.append(time.perf_counter() - started)
            tally.add(path, response.status_code)
        except httpx.HTTPError as e:
            tally.add(path, type(e).__name__)
        await asyncio.sleep(every)


async def sampler(client: httpx.AsyncClient, pid: int, t0: float, every: float, stop_at: float, samples: list) -> None:
    while True:
        metrics = (await client.get("/metrics")).text
        samples.append(
            {
                "t_s": round(time.monotonic() - t0, 1),
                "kv_blocks_in_use": gauge(metrics, "vivace_kv_blocks_in_use"),
                "running": gauge(metrics, "vivace_num_requests_running"),
                "waiting": gauge(metrics, "vivace_num_requests_waiting"),
                "rss_mib": round(rss_mb(pid), 1),
            }
        )
        if time.monotonic() >= stop_at:
            return
        await asyncio.sleep(min(every, max(stop_at - time.monotonic(), 0.0)))


async def soak(args: argparse.Namespace, port: int, pid: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    limits = httpx.Limits(max_connections=args.streams + 8)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]
        tally, health_times, metrics_times, samples = Tally(), [], [], []
        t0 = time.monotonic()
        stop_at = t0 + args.duration
        await asyncio.gather(
            *(streamer(client, model, stop_at, args.cancel_every, tally) for _ in range(args.streams)),
            bad_bodies(client, port, model, stop_at, tally),
            *(
                [poll(client, "/metrics", args.metrics_every, stop_at, tally, metrics_times)]
                if args.metrics_every
                else []
            ),
            poll(client, "/health", 0.25, stop_at, tally, health_times),
            sampler(client, pid, t0, args.sample_every, stop_at, samples),
        )
        load_s = time.monotonic() - t0
        drained_at = None
        while time.monotonic() - t0 < load_s + 30:  # the load has stopped: everything must drain
            metrics = (await client.get("/metrics")).text
            if gauge(metrics, "vivace_num_requests_running") == 0 and gauge(metrics, "vivace_kv_blocks_in_use") == 0:
                drained_at = time.monotonic() - t0 - load_s
                break
            await asyncio.sleep(0.2)
        final = (await client.get("/metrics")).text
    health_sorted = sorted(health_times)
    return {
        "duration_s": round(load_s, 1),
        "metrics_every_s": args.metrics_every,
        "streams": args.streams,
        "outcomes": dict(sorted(tally.counts.items())),
        "server_errors_5xx": sum(n for k, n in tally.counts.items() if re.search(r" 5\d\d$", k)),
        "health_p50_ms": round(statistics.median(health_sorted) * 1000, 1) if health_sorted else None,
        "health_p99_ms": round(health_sorted[int(0.99 * (len(health_sorted) - 1))] * 1000, 1)
        if health_sorted
        else None,
        "health_max_ms": round(health_sorted[-1] * 1000, 1) if health_sorted else None,
        "samples": samples,
        "drained_after_s": None if drained_at is None else round(drained_at, 2),
        "final_running": gauge(final, "vivace_num_requests_running"),
        "final_kv_blocks_in_use": gauge(final, "vivace_kv_blocks_in_use"),
        "final_rss_mib": round(rss_mb(pid), 1),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Soak: {result['duration_s']} s, {result['streams']} streaming clients, bad bodies, "
        f"/metrics every {result['metrics_every_s']} s (0 = not polled)",
        "",
        "| outcome | count |",
        "| --- | ---: |",
        *(f"| {k} | {n:,} |" for k, n in result["outcomes"].items()),
        "",
        f"5xx responses: {result['server_errors_5xx']}; /health p50 {result['health_p50_ms']} ms, "
        f"p99 {result['health_p99_ms']} ms, max {result['health_max_ms']} ms; drained to 0 running and 0 KV "
        f"blocks {result['drained_after_s']} s after the load stopped "
        f"(final: {result['final_running']:.0f} running, {result['final_kv_blocks_in_use']:.0f} blocks)",
        "",
        "| t (s) | KV blocks in use | running | waiting | RSS (MiB) |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {s['t_s']} | {s['kv_blocks_in_use']:.0f} | {s['running']:.0f} | {s['waiting']:.0f} | {s['rss_mib']} |"
            for s in result["samples"]
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load")
    parser.add_argument("--streams", type=int, default=16, help="concurrent streaming clients")
    parser.add_argument("--cancel-every", type=int, default=4, help="one stream in this many hangs up early")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds between KV/RSS samples")
    parser.add_argument("--metrics-every", type=float, default=0.5, help="seconds between /metrics polls; 0 = off")
    parser.add_argument("--max-model-len", type=int, default=2048)
    args = parser.parse_args()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = start_server(port, args.max_model_len, RESULTS_DIR / "soak-server.log")
    try:
        result = asyncio.run(soak(args, port, process.pid))
    finally:
        process.terminate()
        process.wait(timeout=60)
    (RESULTS_DIR / f"soak-metrics{args.metrics_every:g}.json").write_text(json.dumps(result, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
