"""Host overhead of a decode step: the engine's Python work around the model, by phase.

On a GPU the model runs asynchronously (and under CUDA graphs as one launch), but the engine is
synchronous: scheduling, building the step's inputs, building the sampling batch and the output
bookkeeping all add to every step's time. This measures them on CPU with the tiny random-weight
model (so the model itself is cheap), greedy decode with EOS ignored, offline (LLM.generate's
non-streamed requests) or streamed.

    python bench/host_overhead.py                       # batch 1, 32, 128; offline
    python bench/host_overhead.py --batch 64 --stream
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import vivace.engine.runner as runner_module  # noqa: E402
from vivace.engine.config import SamplingParams  # noqa: E402
from vivace.engine.llm import LLM  # noqa: E402

MODEL_PHASES = ("forward", "logits", "sample_kernels")  # the work a GPU would do


def _timed(totals: collections.Counter, key: str, fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - start

    return wrapper


def measure(batch: int, steps: int, stream: bool) -> dict[str, float]:
    """Microseconds per decode step in each phase, for `batch` running sequences."""
    llm = LLM(
        "random:tiny@0", device="cpu", dtype="float32", quantization="none", attention_backend="torch",
        max_model_len=1024, max_num_seqs=batch, max_num_batched_tokens=4096, enable_prefix_caching=False,
        kv_cache_memory_bytes=256 << 20,
    )
    engine = llm.engine
    totals: collections.Counter = collections.Counter()
    for obj, name, key in (
        (engine.scheduler, "schedule", "schedule"), (engine.scheduler, "finish_step", "finish_step"),
        (engine.runner, "build_metadata", "build_inputs"), (engine.runner, "_sample", "sample"),
        (engine.runner, "execute", "execute"), (engine.model, "forward", "forward"),
        (engine.model, "compute_logits", "logits"), (runner_module, "sample", "sample_kernels"),
    ):
        setattr(obj, name, _timed(totals, key, getattr(obj, name)))
    params = SamplingParams(temperature=0, max_tokens=steps + 20, ignore_eos=True)
    for i in range(batch):
        engine.add_request(str(i), [5 + i % 100] * 32, params, stream=stream)
    for _ in range(5):  # prefill and warm-up
        engine.step()
    totals.clear()
    start = time.perf_counter()
    for _ in range(steps):
        engine.step()
    wall = time.perf_counter() - start
    t = {k: v / steps * 1e6 for k, v in totals.items()}
    step = wall / steps * 1e6
    phases = {
        "schedule": t["schedule"] + t["finish_step"],
        "build_inputs": t["build_inputs"],
        "sampling_batch": t["sample"] - t["sample_kernels"],
        "runner_other": t["execute"] - t["build_inputs"] - t["forward"] - t["logits"] - t["sample"],
        "outputs": step - t["schedule"] - t["finish_step"] - t["execute"],
    }
    host = sum(phases.values())
    return {"batch": batch, "step_us": step, "model_us": sum(t[k] for k in MODEL_PHASES), "host_us": host,
            "host_us_per_seq": host / batch, **phases}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, action="append", help="running sequences (repeatable; default 1, 32, 128)")
    ap.add_argument("--steps", type=int, default=100, help="timed decode steps per batch size")
    ap.add_argument("--stream", action="store_true", help="streamed requests (as served) instead of offline")
    args = ap.parse_args(argv)
    rows = [measure(b, args.steps, args.stream) for b in args.batch or [1, 32, 128]]
    cols = ["batch", "host_us", "host_us_per_seq", "schedule", "build_inputs", "sampling_batch", "runner_other",
            "outputs", "model_us", "step_us"]
    print(f"{'streamed' if args.stream else 'offline'} decode steps, tiny random model on CPU, microseconds per step")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:,.0f}" if c != "host_us_per_seq" else f"{r[c]:.1f}" for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
