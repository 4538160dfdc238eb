"""One decode step of the default model in process, with its layers run by the compiled stack
(models/llama_stack.py) and by the Python layers, alternated in one process (same kernels, same
weights): milliseconds per step for one sequence after a 128-token prompt, 128 new tokens.

    python bench/decode_step.py --rounds 4
"""

from __future__ import annotations

import argparse
import json
import time

from vivace.engine.config import SamplingParams
from vivace.engine.llm import LLM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=4, help="alternations of stack and Python layers")
    args = parser.parse_args()
    llm = LLM()
    model = llm.engine.model
    stack = model.stack
    if stack is None:
        raise SystemExit("this model's layers are not covered by the compiled stack")
    prompt = list(range(1000, 1128))
    steps = SamplingParams(temperature=0.0, max_tokens=129, ignore_eos=True)
    first = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)
    llm.generate([prompt], steps)  # warm-up
    ms: dict[str, list[float]] = {"stack": [], "python": []}
    for i in range(2 * args.rounds):
        name = "stack" if i % 2 == 0 else "python"
        model.stack = stack if name == "stack" else None
        start = time.perf_counter()
        llm.generate([prompt], steps)
        total = time.perf_counter() - start
        start = time.perf_counter()
        llm.generate([prompt], first)  # the prefill and first token alone, subtracted
        ms[name].append((total - (time.perf_counter() - start)) / 128 * 1000)
    model.stack = stack
    for name, values in ms.items():
        print(f"{name}: " + " / ".join(f"{v:.2f}" for v in values) + " ms per decode step")
    print(json.dumps(ms))


if __name__ == "__main__":
    main()
