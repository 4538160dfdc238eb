"""LoRA on a (possibly fused) linear layer for a batch mixing adapters: base output plus each token's
own adapter's low-rank product, computed for the whole batch in a few dense matmuls.

Every adapter slot's A matrices are stacked per layer, so one matmul gives x @ A[s].T for every slot
s at once; a one-hot mask of each token's slot keeps only its own adapter's rows (zero for tokens
without one), and one more matmul against the slot-stacked B matrices (block-diagonal over the fused
parts, q/k/v or gate/up) adds exactly the selected slot's product: y = base(x) + scale * (x @ A[slot].T) @ B[slot].T, as
punica/S-LoRA gather it per row. Only slots up to the highest one in the step are computed, and a
step without adapters costs nothing. Adapters of lower rank than the slots are zero-padded.

That masked form is the reference (the torch kernel set). The cpu and triton kernel sets instead
call a gathered op `lora_add` (cpu_ops/csrc/lora.cpp, kernels/triton_lora.py) that adds each
token's own adapter product only: the masked matmuls compute every active slot's product for every
token, and on the CPU their small float32 matmuls cost more in per-call overhead than in arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from vivace.engine.models.linear import Linear

# lora_add(y, x, slots, a, b, ranks, part bounds, max_rank): y += each token's own adapter product, in place.
LoRAAdd = Callable[..., None]


class StepSlots:
    """The current step's adapter slot per token, read by every LoRA linear of a model: a one-hot mask [T, n]
    for the reference, or the slot indices for the compiled op.

    The runner sets it before the forward pass and clears it after; the layers sit deep inside the
    model's families, so the mask is shared state of the model's LoRA manager rather than an argument
    threaded through every family's layer signature (as vLLM's punica wrapper does).
    """

    def __init__(self, max_loras: int, lora_add: LoRAAdd | None = None) -> None:
        self.mask: torch.Tensor | None = None
        self.lora_add = lora_add  # the compiled gathered op, or None for the masked matmuls
        self.slots: torch.Tensor | None = None  # int32 [T]: each token's slot (-1 = none), for lora_add
        self.ranks = torch.zeros(max_loras, dtype=torch.int32)  # each slot's adapter rank (0 = empty)

    def set(self, slots: list[int], dtype: torch.dtype, device: torch.device) -> None:
        """Mask for tokens in `slots` (-1 = no adapter); None when no token uses one."""
        active = max(slots, default=-1) + 1
        if active == 0:
            self.mask = None
            self.slots = None
            return
        if self.lora_add is not None:
            self.slots = torch.tensor(slots, dtype=torch.int32).to(device)
            return
        index = torch.tensor(slots, dtype=torch.long)
        mask = F.one_hot(index.clamp(min=0), active).to(dtype) * (index >= 0).to(dtype)[:, None]
        self.mask = mask.to(device)

    def clear(self) -> None:
        self.mask = None
        self.slots = None


class LoRALinear:
    """A base linear layer whose outputs are `parts` stacked by rows (q/k/v, gate/up, or one), plus adapters."""

    def __init__(
        self,
        base: Linear,
        in_size: int,
        out_sizes: list[int],
        max_loras: int,
        max_rank: int,
        step: StepSlots,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.base = base
        self.step = step
        self.num_parts = len(out_sizes)
        self.max_rank = max_rank
        bounds = [0, *torch.tensor(out_sizes).cumsum(0).tolist()]
        self.bounds = bounds
        self.part_cols = list(zip(bounds[:-1], bounds[1:], strict=True))
        # Rows (slot, part, rank) of both: slots 0..n-1 are one leading slice, so one matmul each serves
        # every active slot. B is block-diagonal over parts (part p's rows fill only its output columns):
        # a few zeros multiplied, in exchange for one matmul and one add per layer instead of one per part.
        rows = max_loras * self.num_parts * max_rank
        self.a = torch.zeros(rows, in_size, dtype=dtype, device=device)
        self.b = torch.zeros(rows, bounds[-1], dtype=dtype, device=device)  # scaled B.T, for h @ b

    def set_slot(self, slot: int, part: int, a: torch.Tensor | None, b: torch.Tensor | None) -> None:
        """Put one part's A [r, in] and scaled B [out, r] in `slot` (None = this adapter leaves the part alone)."""
        first = (slot * self.num_parts + part) * self.max_rank
        a_rows = self.a[first : first + self.max_rank]
        b_rows = self.b[first : first + self.max_rank]
        a_rows.zero_()
        b_rows.zero_()
        if a is not None and b is not None:
            lo, hi = self.part_cols[part]
            a_rows[: a.shape[0]].copy_(a)
            b_rows[: b.shape[1], lo:hi].copy_(b.t())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        step = self.step
        if step.slots is not None:  # the compiled gathered op (set only when there is one)
            step.lora_add(y, x.contiguous(), step.slots, self.a, self.b, step.ranks, self.bounds, self.max_rank)
            return y
        mask = step.mask
        if mask is None:
            return y
        tokens, active = mask.shape
        rows = active * self.num_parts * self.max_rank
        h = F.linear(x, self.a[:rows])  # every active slot's x @ A.T
        h = (h.view(tokens, active, -1) * mask[:, :, None]).view(tokens, rows)  # keep each token's own slot
        return y.addmm_(h, self.b[:rows])
