"""Flow benchmark: the recipe flow on the local engine, its steps concurrent vs one after another.

In one run, on one engine (the CPU default `vivace serve` uses), with the flow's fixed seeds:
  concurrent  the executor as served: every step starts when its inputs are ready, so the parallel
              steps (and the for_each items) batch together in the engine;
  sequential  the same steps with one model call at a time (max_concurrent=1): the baseline;
  critical    the longest dependency chain of the flow, timed from the sequential run's steps (each
              ran alone, uncontended; a for_each step counts as its slowest item): the floor no
              executor can beat without making the steps themselves faster.
Targets: concurrent wall <= 0.5x sequential wall, and <= 1.3x the critical path.
One untimed run first (kernels and grammars compile on first use), then runs alternate (concurrent,
sequential, ...) and medians are reported. Prints a Markdown table and writes JSON to bench/results/.

    python bench/flows.py                  # 2 repeats of each
    python bench/flows.py --repeats 1 --input on_hand="eggs, flour"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_VS_SEQUENTIAL = 0.5
TARGET_VS_CRITICAL = 1.3


def step_durations(result: Any) -> dict[str, float]:
    """Each step's time as if it had run alone: its span, or for a for_each step its slowest item."""
    from vivace.flows.events import StepFinished

    durations: dict[str, float] = {}
    for event in result.events:
        if isinstance(event, StepFinished):
            if event.index is None:
                durations.setdefault(event.step, event.duration)
            else:  # items: the slowest one (they could all run at once)
                durations[event.step] = max(durations.get(event.step, 0.0), event.duration)
    return durations


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from vivace.engine.async_engine import AsyncEngine
    from vivace.engine.config import EngineConfig
    from vivace.flows.executor import collect
    from vivace.flows.graph import critical_path
    from vivace.flows.loader import find_flow
    from vivace.flows.pool import ProviderPool
    from vivace.providers.base import GenerationRequest
    from vivace.providers.local import LocalProvider

    flow = find_flow(args.flow)
    inputs = dict(pair.split("=", 1) for pair in args.input)
    engine = AsyncEngine.from_config(EngineConfig(model=args.model))
    provider = LocalProvider(engine)
    pool = ProviderPool({"local:": provider})
    try:
        await provider.complete(GenerationRequest(prompt="Warm up the kernels.", max_tokens=8))  # first-use compile
        # One untimed run: the schema steps' grammars compile on first use, which would fall on whichever
        # mode ran first.
        await collect(flow, inputs, pool)
        runs: dict[str, list[Any]] = {"concurrent": [], "sequential": []}
        for repeat in range(args.repeats):
            for mode in ("concurrent", "sequential"):
                result = await collect(flow, inputs, pool, max_concurrent=1 if mode == "sequential" else None)
                if not result.finished.ok:
                    raise RuntimeError(f"{mode} run failed steps {result.finished.failed}")
                runs[mode].append(result)
                f = result.finished
                print(f"  {mode:10s} run {repeat + 1}: wall {f.wall_time:6.2f}s, {f.tokens} tokens", file=sys.stderr)
    finally:
        engine.shutdown()

    deps = {name: step.depends_on for name, step in flow.steps.items()}
    concurrent = statistics.median(r.finished.wall_time for r in runs["concurrent"])
    sequential = statistics.median(r.finished.wall_time for r in runs["sequential"])
    critical = statistics.median(critical_path(step_durations(r), deps)[0] for r in runs["sequential"])
    texts = [{n: e.text for n, e in r.steps.items()} for r in runs["concurrent"] + runs["sequential"]]
    return {
        "flow": flow.name,
        "inputs": flow.resolve_inputs(inputs),
        "repeats": args.repeats,
        "concurrent_wall_s": concurrent,
        "sequential_wall_s": sequential,
        "critical_path_s": critical,
        "critical_path": critical_path(step_durations(runs["sequential"][0]), deps)[1],
        "concurrent_critical_path_s": statistics.median(r.finished.critical_path_time for r in runs["concurrent"]),
        "vs_sequential": concurrent / sequential,
        "vs_critical_path": concurrent / critical,
        "tokens": [r.finished.tokens for r in runs["concurrent"] + runs["sequential"]],
        "same_texts_every_run": all(t == texts[0] for t in texts),
        "model_calls": sum(len(runs["concurrent"][0].value(n)) if s.for_each else 1 for n, s in flow.steps.items()),
        "step_durations_sequential": step_durations(runs["sequential"][0]),
        "step_durations_concurrent": step_durations(runs["concurrent"][0]),
    }


def markdown(r: dict[str, Any]) -> str:
    """The result as a Markdown table."""
    ok = lambda ratio, target: "yes" if ratio <= target else "NO"  # noqa: E731
    return "\n".join(
        [
            f"Recipe flow on the local engine ({r['model_calls']} model calls, tokens per run {r['tokens']}, "
            f"same texts every run: {r['same_texts_every_run']}; median of {r['repeats']}):",
            "",
            "| measure | seconds | ratio | target | met |",
            "|---|---|---|---|---|",
            f"| concurrent (as served) wall | {r['concurrent_wall_s']:.2f} | | | |",
            f"| sequential (one call at a time) wall | {r['sequential_wall_s']:.2f} | "
            f"{r['vs_sequential']:.2f}x | <= {TARGET_VS_SEQUENTIAL}x | {ok(r['vs_sequential'], TARGET_VS_SEQUENTIAL)} |",
            f"| critical path ({' -> '.join(r['critical_path'])}, uncontended) | {r['critical_path_s']:.2f} | "
            f"{r['vs_critical_path']:.2f}x | <= {TARGET_VS_CRITICAL}x | {ok(r['vs_critical_path'], TARGET_VS_CRITICAL)} |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flow", default="recipe", help="flow file or packaged example name")
    parser.add_argument("--model", default=None, help="GGUF or HF directory (default: the packaged model)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--input", action="append", default=[], help="key=value; repeat")
    args = parser.parse_args()
    started = time.time()
    result = asyncio.run(run(args))
    result.update(
        machine=platform.machine(),
        cpus=os.cpu_count(),
        python=platform.python_version(),
        date=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
    )
    print(markdown(result))
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"flows-{time.strftime('%Y%m%d-%H%M%S', time.localtime(started))}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
