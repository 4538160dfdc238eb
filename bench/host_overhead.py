"""Host overhead of a decode step: the engine's Python work around the model, by phase.

On a GPU the model runs asynchronously (and under CUDA graphs as one launch), but the engine is
synchronous: scheduling, building the step's inputs, building the sampling batch and the output
bookkeeping all add to every step's time. This measures them on CPU with the tiny random-weight
model (so the model itself is cheap), greedy decode with EOS ignored, offline (LLM.generate's
non-streamed requests) or streamed.

    python bench/host_overhead.py                       # batch 1, 32, 128; offline
    python bench/host_overhead.py --batch 64 --stream
    python bench/host_overhead.py --graphs              # the CUDA-graph decode path's host code

--graphs runs decode steps through the runner's CUDA-graph path (DecodeRows, padding, the pinned
staging copies) with captured graphs replaced by replays that do nothing: on a GPU the replay is one
launch, so what remains is the host time every graph-replayed step pays before the device can start.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

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


class _NoopReplay:
    """A captured graph whose replay costs nothing: its logits stay as they were."""

    def replay(self) -> None:
        pass


def _attach_noop_graphs(llm: LLM, max_num_seqs: int) -> None:
    """Route decode steps through the CUDA-graph path, each 'graph' a no-op over fixed logits."""
    from vivace.engine.attention.triton_backend import TritonAttentionBackend  # graph metadata; needs triton
    from vivace.engine.cuda_graphs import DecodeGraphs

    runner, pool = llm.engine.runner, llm.engine.scheduler.kv
    cfg = runner.model.cfg
    runner.kv_cache = torch.zeros(
        cfg.num_layers, 2, (pool.num_blocks + 1) * runner.block_size, cfg.num_kv_heads, cfg.head_dim
    )
    graphs = DecodeGraphs(
        runner.model,
        TritonAttentionBackend(runner.block_size, torch.device("cpu"), cfg.num_kv_heads),
        runner.kv_cache,
        runner.block_size,
        max_num_seqs,
        llm.engine.max_model_len,
        pad_block=pool.num_blocks,
        device=torch.device("cpu"),
        num_sms=132,
    )
    gen = torch.Generator().manual_seed(0)
    graphs._graphs = {size: (_NoopReplay(), torch.randn(size, cfg.vocab_size, generator=gen)) for size in graphs.sizes}
    runner.graphs = graphs


def measure(
    batch: int, steps: int, stream: bool, graphs: bool = False, tokenizer: str | None = None
) -> dict[str, float]:
    """Microseconds per decode step in each phase, for `batch` running sequences."""
    llm = LLM(
        "random:tiny@0",
        device="cpu",
        dtype="float32",
        quantization="none",
        attention_backend="torch",
        max_model_len=1024,
        max_num_seqs=batch,
        max_num_batched_tokens=4096,
        enable_prefix_caching=False,
        kv_cache_memory_bytes=256 << 20,
        tokenizer=tokenizer,
    )
    engine = llm.engine
    if graphs:
        _attach_noop_graphs(llm, batch)
    totals: collections.Counter = collections.Counter()
    for obj, name, key in (
        (engine.scheduler, "schedule", "schedule"),
        (engine.scheduler, "finish_step", "finish_step"),
        (engine.runner, "prepare_inputs", "build_inputs"),
        (engine.runner, "_sample", "sample"),
        (engine.runner, "execute", "execute"),
        (engine.model, "forward", "forward"),
        (engine.model, "compute_logits", "logits"),
        (runner_module, "sample", "sample_kernels"),
        *(((engine.runner.graphs, "run", "build_inputs"),) if graphs else ()),
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
    t = collections.Counter({k: v / steps * 1e6 for k, v in totals.items()})
    step = wall / steps * 1e6
    phases = {
        "schedule": t["schedule"] + t["finish_step"],
        "build_inputs": t["build_inputs"],
        "sampling_batch": t["sample"] - t["sample_kernels"],
        "runner_other": t["execute"] - t["build_inputs"] - t["forward"] - t["logits"] - t["sample"],
        "outputs": step - t["schedule"] - t["finish_step"] - t["execute"],
    }
    host = sum(phases.values())
    return {
        "batch": batch,
        "step_us": step,
        "model_us": sum(t[k] for k in MODEL_PHASES),
        "host_us": host,
        "host_us_per_seq": host / batch,
        **phases,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, action="append", help="running sequences (repeatable; default 1, 32, 128)")
    ap.add_argument("--steps", type=int, default=100, help="timed decode steps per batch size")
    ap.add_argument("--stream", action="store_true", help="streamed requests (as served) instead of offline")
    ap.add_argument("--graphs", action="store_true", help="decode through the CUDA-graph path (no-op replays)")
    ap.add_argument("--tokenizer", help="a tokenizer file (.gguf or HF dir) where the packaged model is not installed")
    args = ap.parse_args(argv)
    batches = args.batch or [1, 32, 128]
    rows = [measure(b, args.steps, args.stream, args.graphs, args.tokenizer) for b in batches]
    cols = [
        "batch",
        "host_us",
        "host_us_per_seq",
        "schedule",
        "build_inputs",
        "sampling_batch",
        "runner_other",
        "outputs",
        "model_us",
        "step_us",
    ]
    path = "CUDA-graph path, no-op replays" if args.graphs else "torch path"
    print(
        f"{'streamed' if args.stream else 'offline'} decode steps, tiny random model on CPU ({path}), microseconds per step"
    )
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:,.0f}" if c != "host_us_per_seq" else f"{r[c]:.1f}" for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
