"""The runtime tokenizer: encode/decode over a `tokenizers` backend, special tokens, and the chat template."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from tokenizers import Tokenizer as BackendTokenizer

from vivace.engine.chat_template import render_chat_template

_BYTE_FALLBACK_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


class Tokenizer:
    """Text <-> token ids for one model, its special tokens and chat template; loaders.tokenizer_builders builds it."""

    def __init__(
        self,
        backend: BackendTokenizer,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        unk_token: str | None = None,
        pad_token: str | None = None,
        chat_template: str | None = None,
    ) -> None:
        self._backend = backend
        self._special = {"bos_token": bos_token, "eos_token": eos_token, "unk_token": unk_token, "pad_token": pad_token}
        self._chat_template = chat_template
        self._special_ids = sorted(i for i, t in backend.get_added_tokens_decoder().items() if t.special)
        self._byte_ids = (
            frozenset(
                i
                for token, i in backend.get_vocab(with_added_tokens=False).items()
                if _BYTE_FALLBACK_TOKEN.match(token)
            )
            if getattr(backend.model, "byte_fallback", False)
            else frozenset()
        )

    def with_chat_template(self, chat_template: str) -> Tokenizer:
        """This tokenizer with another chat template."""
        return Tokenizer(self._backend, **self._special, chat_template=chat_template)

    @property
    def backend(self) -> BackendTokenizer:
        """The underlying `tokenizers.Tokenizer` (e.g. to save as tokenizer.json)."""
        return self._backend

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; BOS/EOS are added only where the model asks for them."""
        return self._backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`; special (control) tokens are dropped unless `skip_special_tokens` is False."""
        return self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids: int | Iterable[int]) -> str | list[str]:
        """Vocabulary strings of `ids` (byte-level spelling for byte-level BPE)."""
        if isinstance(ids, int):
            return self._backend.id_to_token(ids)
        return [self._backend.id_to_token(i) for i in ids]

    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary string, or None when absent."""
        return self._backend.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def bos_token(self) -> str | None:
        """The beginning-of-sequence token string, or None."""
        return self._special["bos_token"]

    @property
    def eos_token(self) -> str | None:
        """The end-of-sequence token string, or None."""
        return self._special["eos_token"]

    @property
    def bos_token_id(self) -> int | None:
        """Id of the BOS token, or None."""
        return self._id_of(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        """Id of the EOS token, or None."""
        return self._id_of(self.eos_token)

    @property
    def all_special_ids(self) -> list[int]:
        """Ids that `decode(..., skip_special_tokens=True)` drops."""
        return list(self._special_ids)

    @property
    def byte_fallback_ids(self) -> frozenset[int]:
        """Ids of `<0xNN>` byte tokens (SentencePiece byte fallback); empty for byte-level BPE."""
        return self._byte_ids

    @property
    def chat_template(self) -> str | None:
        """The Jinja chat template source, or None when the model has none."""
        return self._chat_template

    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        """Render `messages` to a prompt string exactly as transformers' `apply_chat_template(tokenize=False)`."""
        specials = {key: value for key, value in self._special.items() if value is not None}
        return render_chat_template(
            self._chat_template,
            messages,
            add_generation_prompt=add_generation_prompt,
            special_tokens=specials,
            **kwargs,
        )

    def encode_chat(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **kwargs: Any
    ) -> list[int]:
        """Token ids of a conversation: the rendered template, whose text already places any BOS, as in HF."""
        text = self.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, **kwargs)
        return self.encode(text, add_special_tokens=False)

    def _id_of(self, token: str | None) -> int | None:
        """Id of `token`, None for None or an absent token."""
        return None if token is None else self._backend.token_to_id(token)
