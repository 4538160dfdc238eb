"""Where a decode step's time goes on the device: wall time per step against the kernels' own time.

For each shape and batch size: greedy decode steps of `batch` sequences (prompt 32 tokens, EOS
ignored) under torch.profiler, after warm-up. Per step it reports the wall time, the time the device
spent in kernels (the sum of kernel durations), the number of kernels, and the weight-bytes floor
(bf16 weights / copy bandwidth); then the kernels that took the most time. Wall much above kernel
time means the host (or launch gaps) bounds the step; kernel time much above the floor with many
short kernels means per-kernel latency does.

    python bench/gpu_profile.py                                    # smollm2-135m, llama-3.2-1b, llama-3-8b; batch 1
    python bench/gpu_profile.py --models llama-3.2-1b --batch 1 --batch 64
    python bench/gpu_profile.py --device cpu --models tiny --steps 4   # smoke run of the pipeline on CPU
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu import PRESETS, Plan, measure_ceilings, weight_bytes  # noqa: E402

from vivace.engine.config import SamplingParams  # noqa: E402

TOP_KERNELS = 12
KV_BYTES = 16 << 30  # 8B shape: 128 sequences x 64 tokens take 1.1 GB


def _kernel_events(prof: Any, device: str) -> list[tuple[str, float]]:
    """(name, microseconds) of every device kernel (CPU ops on a CPU run) the profile recorded."""
    events = []
    for e in prof.events():
        if device.startswith("cuda"):
            if e.device_type == torch.autograd.DeviceType.CUDA:
                events.append((e.name, e.device_time))
        elif e.cpu_parent is None and e.name.startswith("aten::"):
            events.append((e.name, e.cpu_time))
    return events


def profile_decode(shape: str, batch: int, steps: int, device: str, tokenizer: str | None) -> dict[str, Any]:
    """Profile `steps` decode steps of `batch` sequences on a random-weight `shape`."""
    from vivace.engine.llm import LLM

    llm = LLM(
        f"random:{shape}@0",
        device=device,
        dtype="bfloat16" if device.startswith("cuda") else "float32",
        quantization="none",
        max_model_len=1024,
        max_num_seqs=max(batch, 1),
        enable_prefix_caching=False,
        # a fixed budget: each shape's engine is built after the last one's is gone
        kv_cache_memory_bytes=KV_BYTES if device.startswith("cuda") else 256 << 20,
        tokenizer=tokenizer,
    )
    engine = llm.engine
    params = SamplingParams(temperature=0, max_tokens=steps + 16, ignore_eos=True)
    for i in range(batch):
        engine.add_request(str(i), [3 + (7 * i + j) % 40000 for j in range(32)], params)
    for _ in range(8):  # prefill, then decode steps (graphs replayed) outside the profile
        engine.step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            engine.step()  # each step ends by reading its tokens: the wall time is synced
        wall = time.perf_counter() - start
    kernels = _kernel_events(prof, device)
    by_name: dict[str, list[float]] = collections.defaultdict(list)
    for name, us in kernels:
        by_name[name].append(us)
    top = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:TOP_KERNELS]
    del llm, engine
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {
        "shape": shape,
        "batch": batch,
        "steps": steps,
        "layers": PRESETS[shape].num_layers,
        "wall_us_per_step": wall / steps * 1e6,
        "kernel_us_per_step": sum(us for _, us in kernels) / steps,
        "kernels_per_step": len(kernels) / steps,
        "top": [
            {
                "name": name[:90],
                "calls_per_step": len(v) / steps,
                "us_per_step": sum(v) / steps,
                "us_each": sum(v) / len(v),
            }
            for name, v in top
        ],
    }


def report(results: list[dict[str, Any]], copy_gb_s: float) -> str:
    """The per-step summary table, then each run's top kernels."""
    lines = [
        f"copy bandwidth {copy_gb_s:,.0f} GB/s (read + write)",
        "",
        "| shape | batch | layers | wall us/step | kernel us/step | kernels/step | floor us/step | kernel / floor | wall / kernel |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        floor = weight_bytes(PRESETS[r["shape"]]) / (copy_gb_s * 1e9) * 1e6
        kernel = r["kernel_us_per_step"]
        lines.append(
            f"| {r['shape']} | {r['batch']} | {r['layers']} | {r['wall_us_per_step']:,.0f} | {kernel:,.0f} "
            f"| {r['kernels_per_step']:,.0f} | {floor:,.0f} | {kernel / floor:.2f} "
            f"| {r['wall_us_per_step'] / max(kernel, 1e-9):.2f} |"
        )
    for r in results:
        lines += ["", f"{r['shape']}, batch {r['batch']}: kernels by time per step", ""]
        lines += ["| kernel | calls/step | us/step | us each |", "|---|---|---|---|"]
        lines += [
            f"| `{k['name']}` | {k['calls_per_step']:.0f} | {k['us_per_step']:,.1f} | {k['us_each']:,.1f} |"
            for k in r["top"]
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse flags, profile each shape and batch, print the tables; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (a smoke run)")
    ap.add_argument("--models", default="smollm2-135m,llama-3.2-1b,llama-3-8b", help="comma-separated presets")
    ap.add_argument("--batch", type=int, action="append", help="running sequences (repeatable; default 1)")
    ap.add_argument("--steps", type=int, default=20, help="profiled decode steps")
    ap.add_argument("--tokenizer", help="a tokenizer file (.gguf or HF dir) where the packaged model is not installed")
    ap.add_argument("--out", type=Path, help="JSON output")
    args = ap.parse_args(argv)
    shapes = args.models.split(",")
    unknown = [s for s in shapes if s not in PRESETS]
    if unknown:
        ap.error(f"unknown model preset(s) {', '.join(unknown)}; presets: {', '.join(PRESETS)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"torch {torch.__version__} sees no CUDA device here; --device cpu smoke-runs the script", file=sys.stderr
        )
        return 2
    on_cpu = args.device == "cpu"
    ceilings = measure_ceilings(
        Plan(args.device, shapes, copy_bytes=1 << 24, matmul_n=256) if on_cpu else Plan(args.device, shapes)
    )
    results = []
    for shape in shapes:
        for batch in args.batch or [1]:
            results.append(profile_decode(shape, batch, args.steps, args.device, args.tokenizer))
            print(json.dumps({k: v for k, v in results[-1].items() if k != "top"}), flush=True)
    table = report(results, ceilings["copy_gb_s"])
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"ceilings": ceilings, "results": results, "table": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
