"""llguidance vs xgrammar on the packaged model's tokenizer: mask time per step and JSON Schema coverage.

Mask time: one matcher walks a small JSON object (the reference tokenization of a value that fits
the schema), timing each next-token mask; the median and max over the steps are printed. Coverage:
which of 20 JSON Schema keywords each library compiles. xgrammar is optional (`pip install xgrammar`;
it requires transformers and, on Linux x86-64, triton); without it only llguidance is measured.

    python bench/grammar_libraries.py
"""

from __future__ import annotations

import json
import statistics
import time

import llguidance
import llguidance.torch

from vivace.engine.loaders.tokenizer_file import load_tokenizer

VOCAB = 49152
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["name", "age", "tags"],
    "additionalProperties": False,
}
VALUE = json.dumps({"name": "Bob", "age": 42, "tags": ["a", "b"]}, separators=(",", ":"))
KEYWORDS = {
    "pattern": {"type": "string", "pattern": "^[a-z]{3}-\\d+$"},
    "minLength/maxLength": {"type": "string", "minLength": 2, "maxLength": 5},
    "format date-time": {"type": "string", "format": "date-time"},
    "format email": {"type": "string", "format": "email"},
    "anyOf": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
    "oneOf": {"oneOf": [{"type": "integer"}, {"type": "boolean"}]},
    "allOf": {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}}, {"required": ["a"]}]},
    "$ref (recursive)": {
        "$defs": {"n": {"type": "object", "properties": {"c": {"type": "array", "items": {"$ref": "#/$defs/n"}}}}},
        "$ref": "#/$defs/n",
    },
    "minimum/maximum": {"type": "integer", "minimum": 3, "maximum": 90},
    "exclusiveMinimum": {"type": "number", "exclusiveMinimum": 0.5},
    "multipleOf": {"type": "integer", "multipleOf": 5},
    "enum/const": {"type": "object", "properties": {"e": {"enum": ["x", "y"]}, "c": {"const": 3}}},
    "additionalProperties (schema)": {"type": "object", "additionalProperties": {"type": "integer"}},
    "minItems/maxItems": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4},
    "prefixItems": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
    "uniqueItems": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
    "patternProperties": {"type": "object", "patternProperties": {"^x_": {"type": "integer"}}},
    "minProperties": {"type": "object", "minProperties": 1},
    "not": {"not": {"type": "string"}},
    "if/then": {"if": {"type": "integer"}, "then": {"minimum": 1}},
}


def _allowed(bits, token: int) -> bool:
    return bool((int(bits[0, token // 32]) >> (token % 32)) & 1)


def llguidance_side(tokenizer, ids: list[int]) -> tuple[list[float], dict[str, bool]]:
    tok = llguidance.LLTokenizer(tokenizer.backend.to_str(), n_vocab=VOCAB, eos_token=tokenizer.eos_token_id)
    options = {"whitespace_flexible": False}
    matcher = llguidance.LLMatcher(tok, llguidance.LLMatcher.grammar_from_json_schema(SCHEMA, defaults=options))
    bits = llguidance.torch.allocate_token_bitmask(1, VOCAB)
    times = []
    for t in ids:
        start = time.perf_counter()
        llguidance.torch.fill_next_token_bitmask(matcher, bits, 0)
        times.append(time.perf_counter() - start)
        assert _allowed(bits, t) and matcher.consume_token(t)
    coverage = {
        name: not llguidance.LLMatcher.validate_grammar(llguidance.LLMatcher.grammar_from_json_schema(s), tok)
        for name, s in KEYWORDS.items()
    }
    return times, coverage


def xgrammar_side(tokenizer, ids: list[int]) -> tuple[list[float], dict[str, bool]] | None:
    try:
        import xgrammar
        from transformers import PreTrainedTokenizerFast
    except ImportError:
        return None
    hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend, eos_token=tokenizer.eos_token)
    compiler = xgrammar.GrammarCompiler(xgrammar.TokenizerInfo.from_huggingface(hf, vocab_size=VOCAB))
    grammar = compiler.compile_json_schema(json.dumps(SCHEMA), any_whitespace=False, separators=(",", ":"))
    matcher = xgrammar.GrammarMatcher(grammar)
    bits = xgrammar.allocate_token_bitmask(1, VOCAB)
    times = []
    for t in ids:
        start = time.perf_counter()
        matcher.fill_next_token_bitmask(bits, 0)
        times.append(time.perf_counter() - start)
        assert _allowed(bits, t) and matcher.accept_token(t)
    coverage = {}
    for name, s in KEYWORDS.items():
        try:
            compiler.compile_json_schema(json.dumps(s), strict_mode=True)
            coverage[name] = True
        except Exception:  # noqa: BLE001 - any refusal counts as not covered
            coverage[name] = False
    return times, coverage


def main() -> None:
    tokenizer = load_tokenizer()
    ids = tokenizer.encode(VALUE, add_special_tokens=False)
    sides = {"llguidance": llguidance_side(tokenizer, ids), "xgrammar": xgrammar_side(tokenizer, ids)}
    sides = {name: side for name, side in sides.items() if side is not None}
    print(f"{len(ids)} steps of {VALUE}")
    print("| | " + " | ".join(sides) + " |\n|---|" + "---|" * len(sides))
    print(
        "| mask per step, median / max (us) | "
        + " | ".join(f"{statistics.median(t) * 1e6:.1f} / {max(t) * 1e6:.1f}" for t, _ in sides.values())
        + " |"
    )
    print(
        "| JSON Schema keywords compiled | "
        + " | ".join(f"{sum(c.values())} of {len(c)}" for _, c in sides.values())
        + " |"
    )
    for name in KEYWORDS:
        print(f"| {name} | " + " | ".join("yes" if c[name] else "no" for _, c in sides.values()) + " |")


if __name__ == "__main__":
    main()
