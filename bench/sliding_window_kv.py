"""Sliding-window KV: KV bytes per sequence and concurrent sequences in one KV budget, Gemma 3 with and
without window freeing (`disable_hybrid_kv_cache_manager`), beside the theoretical need.

Both engines load the same model with the same KV budget. KV held is what the engine's own scheduler
and KV cache manager hold while they drive sequences step by step as the engine does (chunked
prefill, then decode), times the bytes of a block: which blocks a sequence holds is decided there,
not in the forward pass, so the scheduler runs here without the model (a 16k-token prefill per
configuration would take minutes on a CPU). `--real N` also runs the engine itself (forward passes)
on an N-token prompt and checks that it holds the same blocks as the driven scheduler.

Theoretical, per token of context: all layers' K and V bytes x (global/layers + local/layers x
window / context); for Gemma 3 (5 local layers to 1 global) that is 1/6 + 5/6 x window / context.

    python bench/sliding_window_kv.py                          # Gemma 3 270M, 4k and 16k, 1 GiB budget
    python bench/sliding_window_kv.py --contexts 4096 16384 --real 1024
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from vivace.engine.config import SamplingParams
from vivace.engine.llm import LLM
from vivace.engine.scheduler import Scheduler
from vivace.engine.sequence import Sequence

RESULTS_DIR = Path(__file__).resolve().parent.parent / "bench" / "results"
MODES = {"window freeing": False, "whole context": True}  # name -> disable_hybrid_kv_cache_manager


@dataclass
class Held:
    mode: str
    context: int
    decode_bytes: int  # KV held by one sequence while it decodes at `context`
    peak_bytes: int  # the most it held at any step (prefill chunks included)
    theoretical_bytes: int


@dataclass
class Capacity:
    mode: str
    context: int
    budget_bytes: int
    num_blocks: int
    peak_decoding: int  # sequences decoding in one step (their whole context's KV held), at most
    preemptions: int


def _seq(i: int, ids: list[int], new_tokens: int) -> Sequence:
    params = SamplingParams(max_tokens=new_tokens, ignore_eos=True)
    return Sequence(i, f"s{i}", 0, list(ids), len(ids), params, arrival_order=i)


def _drive(scheduler: Scheduler, seqs: list[Sequence], on_step=None) -> None:
    """Run `seqs` to completion through the scheduler as the engine would, appending token 0 for each sample."""
    for seq in seqs:
        scheduler.add(seq)
    while scheduler.has_work:
        batch = scheduler.schedule()
        if on_step is not None:
            on_step(batch)
        scheduler.finish_step(batch)
        for item in batch.all():
            if item.samples:
                item.seq.token_ids.append(0)
                if item.seq.num_output_tokens >= item.seq.params.max_tokens:
                    scheduler.finish(item.seq, "length")
    assert scheduler.kv.num_used == 0, "blocks leaked"


def _block_bytes(llm: LLM) -> int:
    engine = llm.engine
    return engine.model.kv_slot_bytes(engine.kv_dtype) * engine.config.block_size


def theoretical_bytes(llm: LLM, context: int) -> int:
    """All layers' K and V for `context` tokens, local layers' for only their window."""
    model = llm.engine.model
    per_layer = model.kv_bytes_per_token(llm.engine.kv_dtype) // model.cfg.num_layers
    return sum(per_layer * (context if w is None else min(w, context)) for w in model.layer_windows())


def held_per_sequence(llm: LLM, mode: str, context: int, prompt: list[int]) -> Held:
    """Blocks one sequence holds while decoding at `context` tokens, and at its peak."""
    scheduler = llm.engine.scheduler
    scheduler.kv.reset_prefix_cache()
    seq = _seq(0, prompt[: context - 1], 2)  # its second token is decoded at position `context`
    at_context, peak = [0], [0]

    def on_step(batch) -> None:
        used = scheduler.kv.num_used
        peak[0] = max(peak[0], used)
        if batch.decodes and batch.decodes[0].start == context - 1:  # positions 0..context-1 in the cache
            at_context[0] = used

    _drive(scheduler, [seq], on_step)
    b = _block_bytes(llm)
    return Held(mode, context, at_context[0] * b, peak[0] * b, theoretical_bytes(llm, context))


def concurrent_capacity(
    llm: LLM, mode: str, context: int, num_seqs: int, prompt: list[int], new_tokens: int
) -> Capacity:
    """Sequences of `context` tokens (prompt + `new_tokens`) running at once within the engine's KV budget.

    `new_tokens` long enough that sequences are still decoding when the next ones are admitted: with
    short outputs, how fast prefills admit new sequences bounds concurrency rather than memory."""
    scheduler = llm.engine.scheduler
    scheduler.kv.reset_prefix_cache()
    preempted = scheduler.stats.preemptions
    # Distinct prompts (no prefix sharing): each starts with its own token.
    seqs = [_seq(i, [1000 + i] + prompt[: context - new_tokens - 1], new_tokens) for i in range(num_seqs)]
    peak = [0]

    def on_step(batch) -> None:
        peak[0] = max(peak[0], len(batch.decodes))

    _drive(scheduler, seqs, on_step)
    budget = llm.engine.config.kv_cache_memory_bytes or 0
    return Capacity(mode, context, budget, scheduler.kv.num_blocks, peak[0], scheduler.stats.preemptions - preempted)


def real_blocks(llm: LLM, prompt: list[int]) -> tuple[int, int]:
    """Blocks held at the first decode step after `prompt`: by the engine itself (forward passes run),
    and by its scheduler driven without the model."""
    engine = llm.engine
    engine.scheduler.kv.reset_prefix_cache()
    engine.add_request("real", prompt, SamplingParams(max_tokens=3, ignore_eos=True))
    held = 0
    while engine.has_unfinished_requests():
        engine.step()
        running = engine.scheduler.running
        if running and running[0].num_output_tokens == 2:  # the step just run was the first decode
            held = engine.scheduler.kv.num_used
    scheduler = engine.scheduler
    scheduler.kv.reset_prefix_cache()
    driven = [0]

    def on_step(batch) -> None:
        if batch.decodes and batch.decodes[0].start == len(prompt):
            driven[0] = scheduler.kv.num_used

    _drive(scheduler, [_seq(0, prompt, 3)], on_step)
    return held, driven[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3", help="model name or path (default: the packaged Gemma 3 270M)")
    ap.add_argument("--contexts", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--kv-cache-memory", type=int, default=1 << 30, help="KV budget in bytes, both engines")
    ap.add_argument("--capacity-context", type=int, default=4096, help="context of the concurrent sequences")
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--capacity-new-tokens", type=int, default=1024, help="new tokens of each concurrent sequence")
    ap.add_argument("--real", type=int, default=0, help="also run the engine on a prompt of this many tokens")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    max_len = max(*args.contexts, args.capacity_context) + 16
    engines = {
        mode: LLM(
            args.model,
            kv_cache_memory_bytes=args.kv_cache_memory,
            max_model_len=max_len,
            max_num_seqs=args.max_num_seqs,
            disable_hybrid_kv_cache_manager=disable,
        )
        for mode, disable in MODES.items()
    }
    vocab = engines["window freeing"].engine.model_config.vocab_size
    prompt = [(7 * i + 11) % (vocab - 1000) + 500 for i in range(max_len)]
    held = [held_per_sequence(llm, mode, c, prompt) for c in args.contexts for mode, llm in engines.items()]
    capacity = [
        concurrent_capacity(llm, mode, args.capacity_context, args.max_num_seqs, prompt, args.capacity_new_tokens)
        for mode, llm in engines.items()
    ]
    real = {mode: real_blocks(llm, prompt[: args.real]) for mode, llm in engines.items()} if args.real else {}

    mib = 1 << 20
    print(
        "| context | whole context (MiB) | window freeing (MiB) | theoretical (MiB) | freeing / whole | freeing / theoretical | peak with freeing (MiB) |"
    )
    print("|---|---|---|---|---|---|---|")
    for c in args.contexts:
        w, f = (next(h for h in held if h.context == c and h.mode == m) for m in ("whole context", "window freeing"))
        print(
            f"| {c:,} | {w.decode_bytes / mib:.1f} | {f.decode_bytes / mib:.1f} | {f.theoretical_bytes / mib:.1f} "
            f"| {f.decode_bytes / w.decode_bytes:.3f} | {f.decode_bytes / f.theoretical_bytes:.3f} | {f.peak_bytes / mib:.1f} |"
        )
    print()
    print(
        f"| KV budget {args.kv_cache_memory / mib:,.0f} MiB, {args.capacity_context:,}-token sequences | whole context | window freeing | ratio |"
    )
    print("|---|---|---|---|")
    w, f = (next(x for x in capacity if x.mode == m) for m in ("whole context", "window freeing"))
    print(
        f"| sequences decoding at once (most) | {w.peak_decoding} | {f.peak_decoding} "
        f"| {f.peak_decoding / w.peak_decoding:.2f} |"
    )
    print(f"| preemptions over {args.max_num_seqs} sequences | {w.preemptions} | {f.preemptions} | |")
    for mode, (engine_held, driven) in real.items():
        print(f"real engine, {args.real}-token prompt, {mode}: {engine_held} blocks held; driven scheduler: {driven}")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = args.out or RESULTS_DIR / f"sliding_window_kv-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "args": {k: str(v) for k, v in vars(args).items()},
                "held": [asdict(h) for h in held],
                "capacity": [asdict(c) for c in capacity],
                "real": real,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
