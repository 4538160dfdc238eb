"""Constraints compiled for one model's tokenizer: StructuredOutputsParams -> llguidance grammar -> matchers.

llguidance builds its token trie straight from the `tokenizers` JSON the engine already has (about a
second, paid on the first constrained request, never by engines that serve none). Grammars are
validated when a request is admitted, so a schema it cannot honour is a 400 naming the field, and
cached by their text, so repeated schemas compile once.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence

import llguidance

from vivace.engine.config import InvalidParameterError
from vivace.engine.structured.params import StructuredOutputsParams
from vivace.engine.tokenizer import Tokenizer

# JSON as json.dumps writes it (", " and ": "), no other whitespace: free whitespace lets a small model
# pad with newlines until it runs out of tokens.
JSON_OPTIONS: llguidance.JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
    "coerce_one_of": True,
}
_CACHE_SIZE = 256


def to_llguidance(params: StructuredOutputsParams) -> str:
    """The llguidance grammar of a constraint; raises InvalidParameterError naming `params.field`."""
    try:
        kind = params.kind
        if kind == "json":
            return llguidance.LLMatcher.grammar_from_json_schema(params.json, defaults=JSON_OPTIONS)
        if kind == "json_object":
            return llguidance.LLMatcher.grammar_from_json_schema({"type": "object"}, defaults=JSON_OPTIONS)
        if kind == "regex":
            return llguidance.grammar_from("regex", params.regex)
        if kind == "choice":
            return llguidance.grammar_from("choice", json.dumps(params.choice))
        return llguidance.grammar_from("grammar", params.grammar)  # Lark or GBNF
    except (ValueError, TypeError, RuntimeError) as e:
        raise InvalidParameterError(params.field, f"cannot compile the {params.kind} constraint: {e}") from None


class GrammarCompiler:
    """Compiles constraints for one tokenizer and hands out a fresh matcher per sequence."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int, eos_token_ids: Sequence[int]) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._eos = list(eos_token_ids) or [tokenizer.eos_token_id or 0]
        self._ll_tokenizer: llguidance.LLTokenizer | None = None
        self._grammars: OrderedDict[str, str] = OrderedDict()  # constraint key -> validated grammar

    @property
    def ll_tokenizer(self) -> llguidance.LLTokenizer:
        """llguidance's view of the tokenizer, built on first use."""
        if self._ll_tokenizer is None:
            self._ll_tokenizer = llguidance.LLTokenizer(
                self._tokenizer.backend.to_str(), n_vocab=self._vocab_size, eos_token=self._eos
            )
        return self._ll_tokenizer

    def grammar(self, params: StructuredOutputsParams) -> str:
        """The validated grammar of `params`; raises InvalidParameterError naming its field."""
        key = params.key
        grammar = self._grammars.get(key)
        if grammar is not None:
            self._grammars.move_to_end(key)
            return grammar
        grammar = to_llguidance(params)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self.ll_tokenizer)
        if is_error:
            raise InvalidParameterError(params.field, f"cannot use the {params.kind} constraint: {messages[0]}")
        self._grammars[key] = grammar
        if len(self._grammars) > _CACHE_SIZE:
            self._grammars.popitem(last=False)
        return grammar

    def matcher(self, params: StructuredOutputsParams) -> llguidance.LLMatcher:
        """A matcher at the start of `params`' grammar, for one sequence."""
        matcher = llguidance.LLMatcher(self.ll_tokenizer, self.grammar(params), log_level=0)
        if matcher.is_error():
            raise InvalidParameterError(params.field, f"cannot use the {params.kind} constraint: {matcher.get_error()}")
        return matcher
