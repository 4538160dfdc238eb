"""SamplingBatch: one step's per-row sampling parameters gathered into tensors on the device.

Built by the runner for every step that samples; `sampler.sample` consumes it. Each tensor exists
only when some row needs its step, so an all-greedy batch uploads nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from vivace.engine.config import InvalidParameterError, SamplingParams
from vivace.engine.device_io import upload

if TYPE_CHECKING:
    from vivace.engine.structured.masks import RowMasks

_WINDOW = 256  # candidates sorted for top_k/top_p before falling back to a full sort


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator | None:
    """A generator seeded with `seed` on `device`, or None for unseeded requests."""
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed)


def check_token_ids(params: SamplingParams, vocab_size: int) -> None:
    """Raise InvalidParameterError if logit_bias or stop_token_ids name a token outside the vocab.

    Call it when a request is admitted; `SamplingBatch.build` calls it too, as a last guard.
    """
    for name, ids in (("logit_bias", params.logit_bias or ()), ("stop_token_ids", params.stop_token_ids)):
        for t in ids:
            if not 0 <= int(t) < vocab_size:
                raise InvalidParameterError(name, f"token id {t} is outside the vocabulary [0, {vocab_size})")


def unpack_bitmask(bits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[R, W] int32 bitmask (bit t of a row's words set = token t allowed) -> [R, vocab_size] bool."""
    shifts = torch.arange(32, dtype=torch.int32, device=bits.device)
    return ((bits.unsqueeze(-1) >> shifts) & 1).bool().flatten(1)[:, :vocab_size]


def _padded(rows: list[list[int]], pad: int, device: torch.device) -> torch.Tensor:
    """A [B, L] long tensor of `rows`, right-padded with `pad`."""
    width = max((len(r) for r in rows), default=0)
    return upload([r + [pad] * (width - len(r)) for r in rows], torch.long, device)


@dataclass
class SamplingBatch:
    """Per-row sampling tensors for one step, plus flags that let `sample` skip unneeded work.

    Row-parameter tensors for steps 6-9 (`temperature`, `top_k`, `top_p`, `min_p`) are indexed
    by position in `sampled_rows` (the non-greedy rows), not by batch row. Tensors a batch does
    not need are None (an all-greedy batch with no extras has none): on a GPU each would be a copy.
    Nothing in `sample` waits on the device before reading the tokens, except on CPU, where the
    top_p shortcut below looks at the data.
    """

    batch_size: int
    vocab_size: int
    all_greedy: bool
    all_random: bool
    # Step 0, structured outputs: (row ids [R], allowed tokens [R, V] bool); None when no row is constrained.
    allowed: tuple[torch.Tensor, torch.Tensor] | None
    greedy_rows: torch.Tensor | None  # [G] long; only when greedy and sampled rows mix
    sampled_rows: torch.Tensor | None  # [S] long; likewise
    # Steps 1-4, over all rows; None when no row needs the step.
    bias: torch.Tensor | None  # [B, V] float
    min_tokens_mask: tuple[torch.Tensor, torch.Tensor] | None  # (row ids, token ids) to set -inf
    repetition_penalty: torch.Tensor | None  # [B, 1]
    seen: torch.Tensor | None  # [B, V] bool: token in prompt+output
    frequency_penalty: torch.Tensor | None  # [B, 1]
    presence_penalty: torch.Tensor | None  # [B, 1]
    output_counts: torch.Tensor | None  # [B, V] float
    # Steps 6-9, over sampled rows.
    temperature: torch.Tensor | None  # [S, 1]; None when every row is greedy
    top_k: torch.Tensor | None  # [S] long; V where off
    max_top_k: int  # largest top_k in use, 0 if none
    window: int  # how many of the largest logits sampler._top_k_top_p sorts: every finite top_k fits
    in_window: torch.Tensor | None  # [S] bool: the row's top_k fits the window; None if all do
    sort_rows: torch.Tensor | None  # off CPU: rows with top_p beyond the window, sorted in full
    top_p: torch.Tensor | None  # [S, 1]; > 1 where off, so float round-off never trims a row
    min_p: torch.Tensor | None  # [S, 1]
    # Random draw: positions in sampled_rows with their own generator, and the rest.
    seeded: list[tuple[int, torch.Generator]]
    unseeded: torch.Tensor | None  # [U] long, positions in sampled_rows; None if none or all
    num_unseeded: int
    default_generator: torch.Generator | None  # None = torch's global RNG
    # Logprobs.
    logprobs_k: list[int | None]
    need_logprobs: bool
    max_logprobs: int

    @property
    def any_bias(self) -> bool:
        return self.bias is not None

    @property
    def any_penalties(self) -> bool:
        return self.seen is not None or self.output_counts is not None

    @property
    def any_top_k(self) -> bool:
        return self.top_k is not None

    @property
    def any_top_p(self) -> bool:
        return self.top_p is not None

    @property
    def any_min_p(self) -> bool:
        return self.min_p is not None

    @classmethod
    def build(
        cls,
        params: list[SamplingParams],
        prompt_ids: list[list[int]],
        output_ids: list[list[int]],
        generators: list[torch.Generator | None],
        vocab_size: int,
        device: torch.device | str,
        eos_token_ids: Sequence[int] = (),
        default_generator: torch.Generator | None = None,
        speculative_sort: bool | None = None,
        grammar: RowMasks | None = None,
    ) -> SamplingBatch:
        """Gather the rows' parameters into tensors on `device`; rows may share a params object.

        `speculative_sort`: full-sort only the top_p rows that turn out to need it, which means
        looking at the data (a wait on a GPU); default on CPU only. `grammar`: the constrained
        rows' token masks (structured outputs).
        """
        B, V = len(params), vocab_size
        device = torch.device(device)
        if speculative_sort is None:
            speculative_sort = device.type == "cpu"
        if not (len(prompt_ids) == len(output_ids) == len(generators) == B):
            raise ValueError(
                f"params, prompt_ids, output_ids and generators must have one entry per row; got "
                f"{B}, {len(prompt_ids)}, {len(output_ids)}, {len(generators)}"
            )
        # Flags are decided over the distinct params objects (one for a whole offline batch); rows are
        # walked only for the steps some row needs.
        unique = list({id(p): p for p in params}.values())
        for p in unique:
            check_token_ids(p, V)

        if all(p.greedy for p in unique):
            greedy, sampled = list(range(B)), []
        elif not any(p.greedy for p in unique):
            greedy, sampled = [], list(range(B))
        else:
            greedy = [i for i, p in enumerate(params) if p.greedy]
            sampled = [i for i, p in enumerate(params) if not p.greedy]
        sp = [params[i] for i in sampled]
        sp_unique = [p for p in unique if not p.greedy]

        def f32(values: list[float]) -> torch.Tensor:
            return upload(values, torch.float32, device).unsqueeze(1)

        bias = None
        if any(p.logit_bias for p in unique):
            rows, cols, vals = [], [], []
            for i, p in enumerate(params):
                for t, b in (p.logit_bias or {}).items():
                    rows.append(i), cols.append(int(t)), vals.append(float(b))
            bias = torch.zeros(B, V, dtype=torch.float32, device=device)
            bias[upload(rows, torch.long, device), upload(cols, torch.long, device)] = upload(
                vals, torch.float32, device
            )

        min_tokens_mask = None
        mask_rows, mask_cols = [], []
        for i, p in enumerate(params if any(p.min_tokens for p in unique) else ()):
            if len(output_ids[i]) < p.min_tokens:
                banned = set(p.stop_token_ids) | (set() if p.ignore_eos else set(eos_token_ids))
                mask_rows += [i] * len(banned)
                mask_cols += sorted(banned)
        if mask_rows:
            min_tokens_mask = (upload(mask_rows, torch.long, device), upload(mask_cols, torch.long, device))

        repetition_penalty = seen = None
        if any(p.repetition_penalty != 1.0 for p in unique):
            rep = [p.repetition_penalty != 1.0 for p in params]
            # Only rows with a penalty pay for padding their (possibly long) prompts.
            ids = _padded([prompt_ids[i] + output_ids[i] if r else [] for i, r in enumerate(rep)], V, device)
            seen = torch.zeros(B, V + 1, dtype=torch.bool, device=device)
            seen.scatter_(1, ids, True)
            seen = seen[:, :V]
            repetition_penalty = f32([p.repetition_penalty for p in params])

        frequency_penalty = presence_penalty = output_counts = None
        if any(p.frequency_penalty != 0.0 or p.presence_penalty != 0.0 for p in unique):
            fp = [p.frequency_penalty != 0.0 or p.presence_penalty != 0.0 for p in params]
            ids = _padded([output_ids[i] if r else [] for i, r in enumerate(fp)], V, device)
            output_counts = torch.zeros(B, V + 1, dtype=torch.float32, device=device)
            output_counts.scatter_add_(1, ids, torch.ones(ids.shape, dtype=torch.float32, device=device))
            output_counts = output_counts[:, :V]
            frequency_penalty = f32([p.frequency_penalty for p in params])
            presence_penalty = f32([p.presence_penalty for p in params])

        top_k = None
        if any(0 < p.top_k < V for p in sp_unique):
            top_k = upload([p.top_k if 0 < p.top_k < V else V for p in sp], torch.long, device)
        top_p = None
        if any(p.top_p < 1.0 for p in sp_unique):
            top_p = f32([p.top_p if p.top_p < 1.0 else 2.0 for p in sp])
        min_p = None
        if any(p.min_p > 0.0 for p in sp_unique):
            min_p = f32([p.min_p for p in sp])

        seeded = [(j, generators[i]) for j, i in enumerate(sampled) if generators[i] is not None]
        unseeded = [j for j, i in enumerate(sampled) if generators[i] is None]
        need_logprobs = any(p.logprobs is not None for p in unique)
        logprobs_k = [p.logprobs for p in params] if need_logprobs else [None] * B

        def long(values: list[int]) -> torch.Tensor:
            return upload(values, torch.long, device)

        mixed = bool(greedy) and bool(sampled)
        max_top_k = max((p.top_k for p in sp_unique if 0 < p.top_k < V), default=0)
        window = min(V, max(max_top_k, _WINDOW))
        fits = beyond = []
        if top_k is not None or top_p is not None:  # only then does sampler._top_k_top_p run
            fits = [(p.top_k if 0 < p.top_k < V else V) <= window for p in sp]
            beyond = [j for j, p in enumerate(sp) if not fits[j] and p.top_p < 1.0]

        allowed = None
        if grammar is not None:
            bits = grammar.bits.to(device, non_blocking=True)
            allowed = (long(grammar.rows), unpack_bitmask(bits, V))

        return cls(
            batch_size=B,
            vocab_size=V,
            all_greedy=not sampled,
            all_random=not greedy,
            allowed=allowed,
            greedy_rows=long(greedy) if mixed else None,
            sampled_rows=long(sampled) if mixed else None,
            bias=bias,
            min_tokens_mask=min_tokens_mask,
            repetition_penalty=repetition_penalty,
            seen=seen,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
            output_counts=output_counts,
            temperature=f32([p.temperature for p in sp]) if sp else None,
            top_k=top_k,
            max_top_k=max_top_k,
            window=window,
            in_window=None if all(fits) else upload(fits, torch.bool, device),
            sort_rows=long(beyond) if beyond and not speculative_sort else None,
            top_p=top_p,
            min_p=min_p,
            seeded=seeded,
            unseeded=long(unseeded) if 0 < len(unseeded) < len(sampled) else None,
            num_unseeded=len(unseeded),
            default_generator=default_generator,
            logprobs_k=logprobs_k,
            need_logprobs=need_logprobs,
            max_logprobs=max((k or 0 for k in logprobs_k), default=0),
        )
