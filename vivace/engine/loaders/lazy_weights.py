"""Weights read on first use: a GGUF's block-format matrices are dequantized only if something asks for them.

With `quantization="gguf"` (the CPU default) the linear layers compute on the file's own blocks, so
dequantizing those matrices to float32 at load time was work (and memory) thrown away: about half of
the default model's start-up. `LazyWeights` maps names to tensors like a dict, but a tensor given as
a `Deferred` is computed the first time it is read and kept. Its shape is known without computing it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Deferred:
    """A tensor of a known shape, computed by `load` when first read."""

    shape: tuple[int, ...]
    load: Callable[[], torch.Tensor]


class LazyWeights(Mapping[str, torch.Tensor]):
    """Name -> tensor, where deferred tensors are computed on first read (then kept)."""

    def __init__(self, entries: dict[str, torch.Tensor | Deferred]) -> None:
        self._entries = entries

    def __getitem__(self, name: str) -> torch.Tensor:
        entry = self._entries[name]
        if isinstance(entry, Deferred):
            entry = entry.load()
            self._entries[name] = entry
        return entry

    def __contains__(self, name: object) -> bool:  # Mapping's default would compute the tensor
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def shape(self, name: str) -> tuple[int, ...]:
        """The tensor's shape, without computing a deferred one."""
        entry = self._entries[name]
        return tuple(entry.shape)

    def is_loaded(self, name: str) -> bool:
        return not isinstance(self._entries[name], Deferred)


def weight_shape(weights: Mapping[str, torch.Tensor], name: str) -> tuple[int, ...]:
    """A weight's shape, without loading it when `weights` is lazy."""
    return weights.shape(name) if isinstance(weights, LazyWeights) else tuple(weights[name].shape)
