"""KV groups: which layers share a block table, and how many blocks a sliding-window group still needs.

Layers whose KV lives equally long share a block table (a KV group). Full-attention layers keep
every block; sliding-window layers only the blocks their window can still see, so each sequence has
one table per group. All groups draw from ONE block pool, as in vLLM's hybrid KV cache manager: a
block freed by a window serves any group next, so the split between groups follows the live need
(short prompts, long contexts) instead of a ratio fixed at startup. For that every group has the
same number of layers (`group_size`, the gcd of the kinds' layer counts, e.g. Gemma 3 270M's
3 global + 15 local layers form 1 + 5 groups of 3), and a block id names the same slots in each of
the `group_size` KV tensors; tensor j holds the j-th layer of every group.

A window group's table keeps its length: blocks that fell out of the window are replaced by the
pool's null block (never written, never read by the attention), so block i still covers tokens
[i * block_size, (i + 1) * block_size) in every table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NULL_BLOCK = 0  # the pool's reserved placeholder for a window group's released blocks


@dataclass(frozen=True)
class KVGroup:
    """Layers sharing one block table; `window` None = they attend over the whole context."""

    window: int | None
    layers: tuple[int, ...]


@dataclass(frozen=True)
class KVLayout:
    """The model's KV groups (full-attention groups first) and each layer's (group, KV tensor) pair."""

    groups: tuple[KVGroup, ...]

    @property
    def group_size(self) -> int:
        """Layers per group: the number of KV tensors, each shared by one layer of every group."""
        return len(self.groups[0].layers)

    @property
    def has_window(self) -> bool:
        """Whether some group frees blocks as they fall out of its window (and so needs the null block)."""
        return any(g.window is not None for g in self.groups)

    def layer_slots(self, num_layers: int) -> list[tuple[int, int]]:
        """For each layer: (its group, the KV tensor it uses)."""
        slots = [(0, 0)] * num_layers
        for g, group in enumerate(self.groups):
            for j, layer in enumerate(group.layers):
                slots[layer] = (g, j)
        return slots

    def blocks_needed(self, num_tokens: int, chunk: int, block_size: int) -> int:
        """Blocks (all groups together) one sequence of `num_tokens` tokens holds at most, computed in
        steps of up to `chunk` tokens: a window group holds its window plus the step's chunk."""
        full = -(-num_tokens // block_size)
        total = 0
        for group in self.groups:
            if group.window is None:
                total += full
            else:
                total += min(full, -(-(group.window - 1 + chunk) // block_size) + 1)
        return total


def single_group(num_layers: int) -> KVLayout:
    """Every layer attends over the whole context: one table (the layout of Llama, Qwen, SmolLM)."""
    return KVLayout((KVGroup(None, tuple(range(num_layers))),))


def kv_layout(windows: list[int | None]) -> KVLayout:
    """Group layers by their window (None first), in groups of gcd(layer counts) layers each."""
    kinds: dict[int | None, list[int]] = {}
    for layer, window in enumerate(windows):
        kinds.setdefault(window, []).append(layer)
    if len(kinds) == 1:
        (window,) = kinds
        return KVLayout((KVGroup(window, tuple(range(len(windows)))),))
    size = math.gcd(*(len(layers) for layers in kinds.values()))
    order = sorted(kinds, key=lambda w: -1 if w is None else w)
    groups = tuple(
        KVGroup(window, tuple(kinds[window][i : i + size]))
        for window in order
        for i in range(0, len(kinds[window]), size)
    )
    return KVLayout(groups)


def skipped_blocks(num_computed: int, window: int, block_size: int) -> int:
    """Leading blocks no query at position >= `num_computed` can see: keys before p - window + 1."""
    return max(0, num_computed - window + 1) // block_size


def cached_runs(cached: list[bool]) -> list[int]:
    """For each block i: how many blocks in a row up to and including i are cached."""
    runs, run = [], 0
    for hit in cached:
        run = run + 1 if hit else 0
        runs.append(run)
    return runs


def window_allows(runs: list[int], num_blocks: int, window: int, block_size: int) -> bool:
    """Whether a prefix hit of `num_blocks` blocks can resume a window group (vLLM's sliding-window rule):
    the first recomputed token, at num_blocks * block_size, needs the ceil((window - 1) / block_size)
    blocks before it cached (fewer at the start of the sequence); earlier ones may be gone."""
    if num_blocks == 0:
        return True
    need = -(-(window - 1) // block_size)
    return runs[num_blocks - 1] >= min(need, num_blocks)
