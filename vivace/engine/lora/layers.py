"""LoRA on a (possibly fused) linear layer for a batch mixing adapters: base output plus each token's
own adapter's low-rank product, computed for the whole batch in a few dense matmuls.

Every adapter slot's A matrices are stacked per layer, so one matmul gives x @ A[s].T for every slot
s at once; a one-hot mask of each token's slot keeps only its own adapter's rows (zero for tokens
without one), and one more matmul against the slot-stacked B matrices (block-diagonal over the fused
parts, q/k/v or gate/up) adds exactly the selected slot's product: y = base(x) + scale * (x @ A[slot].T) @ B[slot].T, as
punica/S-LoRA gather it per row. Only slots up to the highest one in the step are computed, and a
step without adapters costs nothing. Adapters of lower rank than the slots are zero-padded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vivace.engine.models.linear import Linear


class StepSlots:
    """The current step's adapter slot per token, as a one-hot mask [T, n] read by every LoRA linear of a model.

    The runner sets it before the forward pass and clears it after; the layers sit deep inside the
    model's families, so the mask is shared state of the model's LoRA manager rather than an argument
    threaded through every family's layer signature (as vLLM's punica wrapper does).
    """

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None

    def set(self, slots: list[int], dtype: torch.dtype, device: torch.device) -> None:
        """Mask for tokens in `slots` (-1 = no adapter); None when no token uses one."""
        active = max(slots, default=-1) + 1
        if active == 0:
            self.mask = None
            return
        index = torch.tensor(slots, dtype=torch.long)
        mask = F.one_hot(index.clamp(min=0), active).to(dtype) * (index >= 0).to(dtype)[:, None]
        self.mask = mask.to(device)

    def clear(self) -> None:
        self.mask = None


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
        mask = self.step.mask
        if mask is None:
            return y
        tokens, active = mask.shape
        rows = active * self.num_parts * self.max_rank
        h = F.linear(x, self.a[:rows])  # every active slot's x @ A.T
        h = (h.view(tokens, active, -1) * mask[:, :, None]).view(tokens, rows)  # keep each token's own slot
        return y.addmm_(h, self.b[:rows])
