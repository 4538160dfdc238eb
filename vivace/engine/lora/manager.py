"""The adapters loaded on one model: names, unique ids and slots; loading, unloading, and each step's token slots.

A model built with LoRA enabled has `max_loras` slots in every targeted linear layer; loading an
adapter fills a free slot in place (so CUDA-resident buffers never move), unloading zeroes it.
Requests refer to an adapter by its id, unique for the engine's life: an adapter reloaded under the
same name gets a new id, so the prefix cache (which hashes the id into every block) never hands its
requests KV computed with the old weights.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from vivace.engine.lora.adapter import SUPPORTED_MODULES, LoRAError, load_adapter
from vivace.engine.lora.layers import LoRAAdd, LoRALinear, StepSlots
from vivace.engine.models.linear import Linear


class UnknownLoRAError(LoRAError):
    """No adapter of that name is loaded."""


@dataclass(frozen=True)
class LoadedLoRA:
    """A loaded adapter as requests and listings see it."""

    name: str
    lora_id: int
    slot: int
    path: str
    rank: int


class LoRAManager:
    """Adapter slots across a model's LoRA linears, and which adapter holds which."""

    def __init__(
        self,
        max_loras: int,
        max_rank: int,
        dtype: torch.dtype,
        device: torch.device | str,
        lora_add: LoRAAdd | None = None,
    ) -> None:
        """`lora_add`: the compiled gathered op (kernels.lora_add), or None for the masked-matmul reference."""
        self.max_loras = max_loras
        self.max_rank = max_rank
        self.dtype = dtype
        self.device = torch.device(device)
        self.step = StepSlots(max_loras, lora_add)
        self._modules: dict[str, tuple[LoRALinear, int, int, int]] = {}  # name -> (layer, part, in, out)
        self._by_name: dict[str, LoadedLoRA] = {}
        self._slot_of_id: dict[int, int] = {}
        self._ids = itertools.count(1)

    def wrap(self, base: Linear, names: list[str], in_size: int, out_sizes: list[int]) -> Linear:
        """`base` (the modules `names` fused by rows) with adapter slots, or unchanged if no LoRA may target it."""
        if any(name.rsplit(".", 1)[-1] not in SUPPORTED_MODULES for name in names):
            return base
        layer = LoRALinear(base, in_size, out_sizes, self.max_loras, self.max_rank, self.step, self.dtype, self.device)
        for part, (name, out_size) in enumerate(zip(names, out_sizes, strict=True)):
            self._modules[name] = (layer, part, in_size, out_size)
        return layer

    # ---- adapters ---------------------------------------------------------------------------
    def load(self, name: str, path: str) -> LoadedLoRA:
        """Read the PEFT adapter at `path` into a free slot under `name`; LoRAError naming the problem."""
        if not name or ":" in name:
            raise LoRAError("lora_name", f"must be non-empty and without ':', got {name!r}")
        if name in self._by_name:
            raise LoRAError("lora_name", f"an adapter named {name!r} is already loaded; unload it first")
        used = {lora.slot for lora in self._by_name.values()}
        free = [slot for slot in range(self.max_loras) if slot not in used]
        if not free:
            raise LoRAError("lora_name", f"all {self.max_loras} adapter slots (max_loras) are in use; unload one first")
        adapter = load_adapter(path)
        if adapter.rank > self.max_rank:
            raise LoRAError("lora_path", f"adapter rank {adapter.rank} is above max_lora_rank {self.max_rank}")
        for module, (a, b) in adapter.weights.items():
            if module not in self._modules:
                raise LoRAError("lora_path", f"{path}: targets {module!r}, which this model does not have")
            _, _, in_size, out_size = self._modules[module]
            if a.shape[1] != in_size or b.shape[0] != out_size:
                raise LoRAError(
                    "lora_path",
                    f"{path}: {module} maps {a.shape[1]} -> {b.shape[0]} features, the model's {in_size} -> {out_size}",
                )
        slot = free[0]
        for module, (layer, part, _, _) in self._modules.items():
            pair = adapter.weights.get(module)
            if pair is None:
                layer.set_slot(slot, part, None, None)
            else:
                a, b = pair
                layer.set_slot(slot, part, a.to(self.dtype), (b * adapter.scaling).to(self.dtype))
        self.step.ranks[slot] = adapter.rank
        loaded = LoadedLoRA(name, next(self._ids), slot, path, adapter.rank)
        self._by_name[name] = loaded
        self._slot_of_id[loaded.lora_id] = slot
        return loaded

    def unload(self, name: str) -> LoadedLoRA:
        """Forget adapter `name` and free its slot (the caller makes sure no request still uses it)."""
        loaded = self.get(name)
        del self._by_name[name]
        del self._slot_of_id[loaded.lora_id]
        self.step.ranks[loaded.slot] = 0
        return loaded

    def get(self, name: str) -> LoadedLoRA:
        """The loaded adapter called `name`; UnknownLoRAError otherwise."""
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise UnknownLoRAError("lora_name", f"no adapter named {name!r} is loaded (loaded: {known})") from None

    def loaded(self) -> list[LoadedLoRA]:
        """Every loaded adapter, in load order."""
        return list(self._by_name.values())

    # ---- steps ------------------------------------------------------------------------------
    def set_step(self, token_lora_ids: list[int]) -> None:
        """Each token's adapter (by id; 0 = none) for the coming forward pass."""
        slot_of = self._slot_of_id
        self.step.set([slot_of[i] if i else -1 for i in token_lora_ids], self.dtype, self.device)

    def clear_step(self) -> None:
        self.step.clear()
