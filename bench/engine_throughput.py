"""In-process output tokens/s of the engine at N concurrent streams: no server, no HTTP, prompts as token ids.

`--requests-per-stream` x N requests of `--input-len` random-token prompts each decode `--output-len`
tokens (EOS ignored, greedy) with at most N running at once (`max_num_seqs=N`), so the batch stays
near N until the last wave drains. One untimed warm-up wave first. Reported per N: output tokens/s
(all output tokens over the wall time, prefills included), engine steps, and where a step's time
goes: the model forward and sampling (`runner.execute`) against the rest of `engine.step`
(scheduling, KV bookkeeping, detokenization, output assembly).

`--temperature T` samples every output token at temperature T (the sampler's cost at N rows) instead
of taking the greedy argmax.

`--shared-prefix P` starts every prompt with the same P tokens (a system prompt): the prefix cache
computes them once, and each decode then attends over P + `--input-len` keys read from shared blocks.

Measures what the served benchmark (`bench/serving.py`) measures minus the server, so a kernel or
scheduling change can be A/B'd without HTTP's noise:

    python bench/engine_throughput.py --streams 1 32
    bash bench/ab.sh HEAD~1 2 .venv/bin/python bench/engine_throughput.py --streams 32
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from vivace.engine.config import SamplingParams
from vivace.engine.llm import LLM


class StepClock:
    """Seconds spent inside `engine.step` and inside its `runner.execute`, by wrapping both."""

    def __init__(self, llm: LLM) -> None:
        self.reset()
        engine = llm.engine
        engine.step = self._timed(engine.step, "step_s", count=True)  # type: ignore[method-assign]
        engine.runner.execute = self._timed(engine.runner.execute, "execute_s")  # type: ignore[method-assign]

    def _timed(self, fn: Callable[..., Any], field: str, count: bool = False) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                setattr(self, field, getattr(self, field) + time.perf_counter() - start)
                if count:
                    self.steps += 1

        return timed

    def reset(self) -> None:
        self.step_s = self.execute_s = 0.0
        self.steps = 0


def prompts_for(count: int, length: int, vocab: int, seed: int, prefix: Sequence[int] = ()) -> list[list[int]]:
    """`count` prompts of `prefix` then `length` random token ids (without a prefix, the prefix cache stays out)."""
    rng = random.Random(seed)
    return [list(prefix) + [rng.randrange(100, vocab) for _ in range(length)] for _ in range(count)]


def run(llm: LLM, clock: StepClock, streams: int, args: argparse.Namespace) -> dict[str, float]:
    llm.engine.scheduler.max_num_seqs = streams
    vocab = min(llm.tokenizer.vocab_size, 32_000)
    params = SamplingParams(temperature=args.temperature, max_tokens=args.output_len, ignore_eos=True)
    warm = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    prefix = prompts_for(1, args.shared_prefix, vocab, args.seed + 2)[0]
    llm.generate(prompts_for(streams, args.input_len, vocab, args.seed + 1, prefix), warm, use_tqdm=False)
    prompts = prompts_for(streams * args.requests_per_stream, args.input_len, vocab, args.seed, prefix)
    clock.reset()
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    wall = time.perf_counter() - start
    tokens = sum(len(out.outputs[0].token_ids) for out in outputs)
    return {
        "streams": streams,
        "requests": len(prompts),
        "output_tokens": tokens,
        "wall_s": round(wall, 3),
        "output_tok_s": round(tokens / wall, 1),
        "steps": clock.steps,
        "ms_per_step": round(1000 * clock.step_s / max(clock.steps, 1), 2),
        "forward_and_sample_share": round(clock.execute_s / max(clock.step_s, 1e-9), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model id or path (default: the packaged model)")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32], help="concurrent streams, one run each")
    parser.add_argument("--requests-per-stream", type=int, default=4)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--shared-prefix", type=int, default=0, help="tokens every prompt starts with")
    parser.add_argument("--kv-cache-dtype", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); above 0 samples")
    args = parser.parse_args()
    if min(args.streams) < 1 or args.requests_per_stream < 1 or args.input_len < 1 or args.output_len < 1:
        parser.error("--streams, --requests-per-stream, --input-len and --output-len must be positive")
    if args.shared_prefix < 0:
        parser.error("--shared-prefix must be 0 or more")
    llm = LLM(args.model, max_num_seqs=max(args.streams), kv_cache_dtype=args.kv_cache_dtype)
    clock = StepClock(llm)
    rows = [run(llm, clock, streams, args) for streams in args.streams]
    for row in rows:
        print(
            f"{row['streams']:>3} streams: {row['output_tok_s']:>7.1f} output tok/s, {row['steps']} steps,"
            f" {row['ms_per_step']:.2f} ms/step, forward+sampling {100 * row['forward_and_sample_share']:.0f}%"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
