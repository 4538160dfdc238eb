"""Structured outputs benchmark: 32 concurrent JSON-schema requests vs the same requests unconstrained.

One engine (the packaged model, CPU default configuration, max_num_seqs = the concurrency) runs, in
alternating rounds:
  constrained    chat requests asking for JSON, each with one of three JSON schemas
                 (response_format json_schema: token masks from llguidance), temperature 0.7;
  unconstrained  the same prompts, sampling parameters and seeds without a schema, each asked for
                 exactly as many tokens as its constrained twin produced (ignore_eos), so both sides
                 generate the same token counts and the ratio is the per-token cost of the masks.
Reports output tokens/s of both and their ratio (goal >= 0.8x), and the fraction of constrained
outputs that parse and validate against their schema (jsonschema; goal: all that finish with "stop").

    python bench/structured_outputs.py                 # 32 requests, 3 rounds
    python bench/structured_outputs.py --requests 8 --rounds 1 --max-tokens 48    # smoke
"""

from __future__ import annotations

import argparse
import json
import time

import jsonschema

from vivace.engine.config import SamplingParams
from vivace.engine.llm import LLM
from vivace.engine.structured.params import StructuredOutputsParams

SCHEMAS = {
    "person": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 32},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 24}, "maxItems": 3},
        },
        "required": ["name", "age", "hobbies"],
        "additionalProperties": False,
    },
    "product": {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 40},
            "price": {"type": "number", "minimum": 0},
            "in_stock": {"type": "boolean"},
            "category": {"enum": ["food", "tools", "clothes", "books"]},
        },
        "required": ["title", "price", "in_stock", "category"],
        "additionalProperties": False,
    },
    "event": {
        "type": "object",
        "properties": {
            "event": {"type": "string", "maxLength": 40},
            "date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
            "attendees": {"type": "integer", "minimum": 1, "maximum": 1000},
        },
        "required": ["event", "date", "attendees"],
        "additionalProperties": False,
    },
}
SUBJECTS = ["a sailor", "a teacher", "a hammer", "a novel", "a wedding", "a marathon", "a baker", "a jacket"]


def requests(n: int, max_tokens: int) -> list[tuple[list[dict], str, SamplingParams]]:
    """(messages, schema name, constrained params) for n requests, cycling through schemas and subjects."""
    out = []
    names = list(SCHEMAS)
    for i in range(n):
        name = names[i % len(names)]
        subject = SUBJECTS[i % len(SUBJECTS)]
        messages = [{"role": "user", "content": f"Describe {subject} as a JSON {name} object."}]
        constraint = StructuredOutputsParams(json=SCHEMAS[name], field="response_format")
        params = SamplingParams(temperature=0.7, seed=i, max_tokens=max_tokens, structured_outputs=constraint)
        out.append((messages, name, params))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()

    llm = LLM(max_num_seqs=args.requests)
    work = requests(args.requests, args.max_tokens)
    prompts = [llm.tokenizer.encode_chat(m) for m, _, _ in work]
    llm.generate(prompts[:4], [p for _, _, p in work[:4]], use_tqdm=False)  # warm-up: kernels, llguidance tables

    rates: dict[str, list[float]] = {"constrained": [], "unconstrained": []}
    valid = stopped = total = 0
    for _ in range(args.rounds):
        start = time.perf_counter()
        outs = llm.generate(prompts, [p for _, _, p in work], use_tqdm=False)
        elapsed = time.perf_counter() - start
        lengths = [len(o.outputs[0].token_ids) for o in outs]
        rates["constrained"].append(sum(lengths) / elapsed)
        for (_, name, _), out in zip(work, outs, strict=True):
            completion = out.outputs[0]
            total += 1
            if completion.finish_reason != "stop":
                continue
            stopped += 1
            try:
                jsonschema.validate(json.loads(completion.text), SCHEMAS[name])
                valid += 1
            except (ValueError, jsonschema.ValidationError) as e:
                print(f"invalid output ({name}): {completion.text!r}: {e}")
        twins = [
            SamplingParams(temperature=0.7, seed=p.seed, max_tokens=n, ignore_eos=True)
            for (_, _, p), n in zip(work, lengths, strict=True)
        ]
        start = time.perf_counter()
        outs = llm.generate(prompts, twins, use_tqdm=False)
        rates["unconstrained"].append(sum(len(o.outputs[0].token_ids) for o in outs) / (time.perf_counter() - start))

    print(f"| | output tok/s ({args.rounds} rounds) | mean |")
    print("|---|---|---|")
    for side, values in rates.items():
        print(f"| {side} | {' / '.join(f'{v:.1f}' for v in values)} | {sum(values) / len(values):.1f} |")
    ratio = sum(rates["constrained"]) / sum(rates["unconstrained"])
    print(f"| constrained / unconstrained | | **{ratio:.2f}x** (goal >= 0.8x) |")
    print(f"\nfinished with stop: {stopped}/{total}; of those, parse and validate: {valid}/{stopped}")


if __name__ == "__main__":
    main()
