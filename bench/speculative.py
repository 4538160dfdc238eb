"""Speculative decoding (prompt lookup / n-gram, Medusa heads) vs plain decoding: single-stream tokens/s, side by side.

Two workloads, each prompt run by both engines in turn (which goes first alternates, so machine
noise hits both alike), after both warmed up over as long a context, greedy, through the chat template:
- input-grounded: rewrite, edit, summarise and code-change prompts whose answers copy spans of the
  prompt (goal for prompt lookup: >= 1.8x tokens/s);
- open-ended chat: answers copy nothing, so prompt lookup must back off (goal: >= 0.95x).
Medusa heads guess from the model's state, not the prompt: their goal is >= 1.5x on both (the chat
prompts are not among train-medusa's packaged ones).
Reported per workload: tokens/s of each engine and the ratio, the proposed tokens' acceptance rate,
the mean tokens per verification, and whether every output is identical (greedy must be).

    python bench/speculative.py                     # the packaged SmolLM2-135M, default CPU engine
    python bench/speculative.py --speculative ngram:k=6 --max-tokens 200
    python bench/speculative.py --quantization none   # float32 weights: extra rows cost little
    vivace train-medusa heads && python bench/speculative.py --speculative medusa:heads
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass

from vivace.engine.config import SamplingParams
from vivace.engine.llm import LLM

ARTICLE = (
    "The city council voted on Monday to extend the opening hours of the central library. From next "
    "month the library will open at eight in the morning and close at ten in the evening on weekdays. "
    "The change follows a survey in which most residents asked for longer hours, especially students "
    "preparing for exams. The extra hours will be paid for by a small increase in the culture budget."
)
CODE = (
    "def total_price(items, tax_rate):\n"
    "    total = 0\n"
    "    for item in items:\n"
    "        total = total + item.price * item.quantity\n"
    "    total = total + total * tax_rate\n"
    "    return total\n"
)
GROUNDED = [
    f"Rewrite this text, replacing 'library' with 'museum' and changing nothing else:\n\n{ARTICLE}",
    f"Correct any mistakes in this text and return the full corrected text:\n\n{ARTICLE}",
    f"Rename the function total_price to compute_total and return the whole code:\n\n{CODE}",
    f"Summarise this article in two sentences, reusing its wording:\n\n{ARTICLE}",
]
CHAT = [
    "Write a short poem about the sea at night.",
    "What are three tips for staying focused while studying?",
    "Tell me a short story about a robot who learns to paint.",
    "Explain why the sky is blue to a ten-year-old.",
]
# Goals per method: (input-grounded, open-ended chat).
GOALS = {"ngram": (1.8, 0.95), "draft": (1.5, 1.5), "medusa": (1.5, 1.5)}


@dataclass
class Row:
    workload: str
    plain_tok_s: float
    spec_tok_s: float
    speedup: float
    goal: float
    acceptance_rate: float  # accepted / proposed tokens
    mean_acceptance_length: float  # tokens emitted per verification
    identical: bool


def _spec_counts(llm: LLM) -> tuple[int, int, int]:
    s = llm.engine.stats()
    return s["spec_decode_num_drafts"], s["spec_decode_num_draft_tokens"], s["spec_decode_num_accepted_tokens"]


def run_workload(name: str, prompts: list[str], plain: LLM, spec: LLM, params: SamplingParams, goal: float) -> Row:
    """Every prompt on both engines, one stream at a time; tokens/s over the whole workload."""
    times = {"plain": 0.0, "spec": 0.0}
    tokens = {"plain": 0, "spec": 0}
    identical = True
    before = _spec_counts(spec)
    for i, prompt in enumerate(prompts):
        messages = [{"role": "user", "content": prompt}]
        texts = {}
        arms = [("plain", plain), ("spec", spec)]
        for arm, llm in arms if i % 2 == 0 else arms[::-1]:  # each goes first half of the time
            start = time.perf_counter()
            out = llm.chat(messages, params, use_tqdm=False)[0].outputs[0]
            times[arm] += time.perf_counter() - start
            tokens[arm] += len(out.token_ids)
            texts[arm] = out.token_ids
        identical &= texts["plain"] == texts["spec"]
    drafts, proposed, accepted = (a - b for a, b in zip(_spec_counts(spec), before, strict=True))
    plain_rate, spec_rate = tokens["plain"] / times["plain"], tokens["spec"] / times["spec"]
    return Row(
        name,
        round(plain_rate, 1),
        round(spec_rate, 1),
        round(spec_rate / plain_rate, 2),
        goal,
        round(accepted / proposed, 2) if proposed else 0.0,
        round(1 + accepted / drafts, 2) if drafts else 1.0,
        identical,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model (default: the packaged SmolLM2-135M)")
    parser.add_argument("--speculative", default="ngram:k=4", help="the speculating engine's --speculative")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quantization", default="auto", help="the engines' weights (auto: GGUF blocks on CPU)")
    args = parser.parse_args()
    options = {"model": args.model, "device": args.device, "max_model_len": 2048, "quantization": args.quantization}
    plain, spec = LLM(**options), LLM(**options, speculative=args.speculative)
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    # Warm up both engines over the contexts the workloads reach (first calls at a new length pay one-time
    # costs of tens of seconds on CPU), with a prompt none of them shares a prefix with.
    warm = [{"role": "system", "content": "Warm-up."}, {"role": "user", "content": " ".join([ARTICLE, CODE] * 2)}]
    for llm in (plain, spec):
        llm.chat(warm, SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True), use_tqdm=False)
    grounded_goal, chat_goal = GOALS[args.speculative.partition(":")[0]]
    rows = [
        run_workload("input-grounded", GROUNDED, plain, spec, params, grounded_goal),
        run_workload("open-ended chat", CHAT, plain, spec, params, chat_goal),
    ]
    print(f"speculative={args.speculative} max_tokens={args.max_tokens} quantization={args.quantization}")
    print("| workload | plain tok/s | spec tok/s | speed-up | goal | acceptance rate | mean acceptance length |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        verdict = "met" if r.speedup >= r.goal else "**missed**"
        print(
            f"| {r.workload} | {r.plain_tok_s} | {r.spec_tok_s} | {r.speedup}x | >= {r.goal}x ({verdict}) | "
            f"{r.acceptance_rate} | {r.mean_acceptance_length} |"
        )
    print(json.dumps([asdict(r) for r in rows]))
    if not all(r.identical for r in rows):
        raise SystemExit("greedy outputs differ between plain and speculative decoding")


if __name__ == "__main__":
    main()
