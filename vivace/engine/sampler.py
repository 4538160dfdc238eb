"""Batched sampling: logits [B, V] plus per-row SamplingParams -> one token per row.

Order of operations, per row (each step is skipped for the whole batch when no row needs it):

0. Structured outputs: tokens the row's grammar does not allow next are set to -inf.
1. logit_bias is added.
2. min_tokens: while len(output) < min_tokens, EOS ids (unless ignore_eos) and stop_token_ids are
   set to -inf.
3. repetition_penalty (HF): over prompt+output tokens, positive logits are divided, negative ones
   multiplied.
4. presence/frequency penalties (OpenAI): over output tokens, logit -= freq*count + presence*(count>0).
5. Greedy rows (temperature 0) take the argmax (first index on ties); steps 6-9 are for the others.
6. Divide by temperature.
7. top_k: keep the k largest.
8. top_p: on the top_k-renormalised distribution keep the smallest prefix (by descending prob)
   whose mass is >= top_p; the top token is always kept.
9. min_p: drop tokens with prob < min_p * max_prob.
10. Draw by inverse CDF: the first token whose cumulative probability exceeds u, u ~ U[0, 1) scaled
    to the row's total; a row with its own generator draws its u from it alone, so its tokens do not
    depend on what else is in the batch. Each sampled step takes one uniform from a seeded row's
    generator; greedy rows take none.

Logprobs are "raw": log_softmax of the logits as given, before any of the steps above.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from vivace.engine.kernels.torch_ops import argmax_rows as torch_argmax_rows
from vivace.engine.sampling_batch import SamplingBatch

Argmax = Callable[[torch.Tensor], torch.Tensor]  # first index of each row's largest value

_NEG_INF = float("-inf")
# Rows whose top_p set is beyond the sorted window try one this many times wider (a partial sort:
# [32, 49152] flat rows, topk(4096) 11 ms against a full sort's 56 ms) before a full sort.
_WIDE_WINDOW_FACTOR = 16


@dataclass
class SamplerOutput:
    """One step's result.

    `logprobs` is None when no row asked for logprobs; otherwise it holds the chosen token's raw
    logprob for every row (also rows that did not ask: it is free, and the engine decides what to
    report). `top_logprobs` is None likewise; otherwise row i holds params.logprobs (token, logprob)
    pairs sorted by descending logprob, and [] for rows whose params.logprobs is None or 0.
    """

    token_ids: list[int]
    logprobs: list[float] | None = None
    top_logprobs: list[list[tuple[int, float]]] | None = None


def adjusted_logits(logits: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
    """Steps 0-4 (grammar, bias, min_tokens, penalties); returns `logits` itself when no row needs any."""
    x = logits
    if batch.allowed is not None:
        rows, allowed = batch.allowed
        x = x.clone()
        x[rows] = x[rows].masked_fill_(~allowed, _NEG_INF)
    if batch.bias is not None:
        x = x + batch.bias
    if batch.min_tokens_mask is not None:
        x = x.clone() if x is logits else x
        x[batch.min_tokens_mask] = _NEG_INF
    if batch.seen is not None:
        rp = batch.repetition_penalty
        penalised = torch.where(x > 0, x / rp, x * rp)
        x = torch.where(batch.seen, penalised, x)
    if batch.output_counts is not None:
        counts = batch.output_counts
        x = x - (batch.frequency_penalty * counts + batch.presence_penalty * (counts > 0))
    return x


def _beyond_top_p(cum: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Which sorted positions fall outside the top_p set, given cumulative probabilities [S, C].

    A position is out once the mass before it reaches top_p; the first never is, even when top_p
    is below float32's smallest value (1e-300 rounds to 0, and 0 >= 0 would drop every token).
    """
    mass_before = torch.cat([torch.full_like(cum[:, :1], -1.0), cum[:, :-1]], dim=-1)
    return mass_before >= top_p


def _top_k_top_p(x: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
    """Steps 7-8 on [S, V] logits: -inf outside each row's top_k / top_p set.

    Exact, but sorts only a window of the largest logits: a full sort of [64, 32000] takes
    ~290 ms on one CPU core, topk(256) ~15 ms. Rows whose top_p set may not fit in the window (no
    top_k: flat distributions) fall back to a full sort of just those rows: on CPU only the rows
    that turn out to need it, after a window 16 times wider; on a GPU (where sorting is cheap and
    looking costs a wait) all of them.
    """
    c = batch.window
    vals, idx = x.topk(c, dim=-1)  # sorted descending
    if batch.top_k is not None:
        vals.masked_fill_(torch.arange(c, device=x.device) >= batch.top_k.unsqueeze(1), _NEG_INF)
    in_window = batch.in_window  # None when every row's top_k fits the window
    row_lse = None  # each row's logsumexp over the whole row, once: the fallbacks below reuse it
    if batch.top_p is not None:
        lse = vals.logsumexp(dim=-1)
        if in_window is not None:  # the top_p mass of rows without top_k is over the whole row
            row_lse = x.logsumexp(dim=-1)
            lse = torch.where(in_window, lse, row_lse)
        cum = (vals - lse.unsqueeze(1)).exp_().cumsum_(dim=-1)
        vals.masked_fill_(_beyond_top_p(cum, batch.top_p), _NEG_INF)
    out = torch.full_like(x, _NEG_INF).scatter_(1, idx, vals)
    if in_window is None:
        return out
    # A row beyond the window is done if its top_p set fit in it; a row without top_p keeps everything.
    resolved = in_window if batch.top_p is None else in_window | (cum[:, -1] >= batch.top_p.squeeze(1))
    out = torch.where(resolved.unsqueeze(1), out, x)
    if row_lse is None:  # no top_p: rows beyond the window keep everything
        return out
    rows = batch.sort_rows
    if rows is None:  # on CPU: a wider window first, a full sort only for the rows still beyond it
        rows = (~resolved & (batch.top_p.squeeze(1) <= 1.0)).nonzero().squeeze(1)
        wide = min(x.shape[1], _WIDE_WINDOW_FACTOR * c)
        if len(rows) and wide < x.shape[1]:
            filtered, fits = _top_p_over_largest(x[rows], row_lse[rows], batch.top_p[rows], wide)
            out[rows[fits]] = filtered[fits]
            rows = rows[~fits]
    if len(rows):
        out[rows] = _top_p_over_largest(x[rows], row_lse[rows], batch.top_p[rows], x.shape[1])[0]
    return out


def _top_p_over_largest(
    x: torch.Tensor, lse: torch.Tensor, top_p: torch.Tensor, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top_p on rows of logits [R, V] (no top_k; `lse` [R] their logsumexp) among each row's `width` largest:
    the rows with -inf outside their top_p set, and which rows' sets fit in that many (at width V every
    row's is exact)."""
    if width >= x.shape[1]:
        vals, idx = x.sort(dim=-1, descending=True)
    else:
        vals, idx = x.topk(width, dim=-1)  # sorted descending
    cum = (vals - lse.unsqueeze(1)).exp_().cumsum_(dim=-1)
    fits = cum[:, -1] >= top_p.squeeze(1)
    vals.masked_fill_(_beyond_top_p(cum, top_p), _NEG_INF)
    return torch.full_like(x, _NEG_INF).scatter_(1, idx, vals), fits


def _filtered_logits(x: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
    """Steps 6-9 on the sampled rows of adjusted logits: a new [S, V] tensor, -inf where dropped."""
    if batch.all_random:
        x = x / batch.temperature
    else:
        x = x.index_select(0, batch.sampled_rows).div_(batch.temperature)
    if batch.top_k is not None or batch.top_p is not None:
        x = _top_k_top_p(x, batch)
    if batch.min_p is not None:
        # p < min_p * p_max  <=>  logit < logit_max + log(min_p); log(0) = -inf drops nothing.
        threshold = x.amax(dim=-1, keepdim=True) + batch.min_p.log()
        x.masked_fill_(x < threshold, _NEG_INF)
    return x


def processed_logprobs(
    logits: torch.Tensor, batch: SamplingBatch, argmax_rows: Argmax = torch_argmax_rows
) -> torch.Tensor:
    """The [B, V] log-probabilities each row is finally drawn from; greedy rows are one-hot."""
    x = adjusted_logits(logits, batch)
    out = torch.full_like(x, _NEG_INF)
    if batch.all_greedy:
        out.scatter_(1, argmax_rows(x).unsqueeze(1), 0.0)
    elif not batch.all_random:
        g = batch.greedy_rows
        out[g, argmax_rows(x[g])] = 0.0
    if not batch.all_greedy:
        out[batch.sampled_rows] = _filtered_logits(x, batch).log_softmax(dim=-1)
    return out


def inverse_cdf(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per row of non-negative `weights` [R, V] (consumed; rows need not sum to 1): the first index whose
    cumulative weight exceeds u * the row's total, u [R, 1] uniform in [0, 1); a draw proportional to
    the weights from one uniform per row.

    The cumulative sums only grow, so the index found has positive weight; u * total is kept below the
    total, which a rounded-up product could reach. A row of zero total weight gets its last index.
    """
    cdf = weights.cumsum_(dim=-1)
    total = cdf[:, -1:]
    target = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_(max=cdf.shape[1] - 1)


def _draw(probs: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
    """A token per row of [S, V] probs (consumed) by inverse CDF, u from each row's generator.

    One uniform per row where the exponential race argmax(probs / q), q ~ Exp(1), takes V: on CPU the
    race's uniforms were most of a sampled step's cost ([32, 49152]: ~10 ms against ~1 ms).
    """
    u = torch.empty(len(probs), 1, dtype=probs.dtype, device=probs.device)
    if batch.num_unseeded == len(u):
        u.uniform_(generator=batch.default_generator)
    elif batch.unseeded is not None:
        drawn = torch.empty(batch.num_unseeded, 1, dtype=u.dtype, device=u.device)
        u[batch.unseeded] = drawn.uniform_(generator=batch.default_generator)
    for j, g in batch.seeded:
        u[j].uniform_(generator=g)
    return inverse_cdf(probs, u)


def sample(logits: torch.Tensor, batch: SamplingBatch, argmax_rows: Argmax = torch_argmax_rows) -> SamplerOutput:
    """Pick one token per row of float32 `logits` [B, V]; `logits` is not modified.

    `argmax_rows` is the kernel set's (the compiled one on CPU); any gives the same tokens.
    """
    x = adjusted_logits(logits, batch)
    if batch.all_greedy:
        tokens = argmax_rows(x)
    else:
        drawn = _draw(_filtered_logits(x, batch).softmax(dim=-1), batch)
        if batch.all_random:
            tokens = drawn
        else:
            tokens = torch.empty(batch.batch_size, dtype=torch.long, device=logits.device)
            tokens[batch.sampled_rows] = drawn
            tokens[batch.greedy_rows] = argmax_rows(x[batch.greedy_rows])
    if not batch.need_logprobs:
        return SamplerOutput(token_ids=tokens.tolist())  # the one wait on the device in a step

    raw = logits.log_softmax(dim=-1)
    k = min(batch.max_logprobs, batch.vocab_size)
    parts = [tokens.unsqueeze(1).double(), raw.gather(1, tokens.unsqueeze(1)).double()]
    if k > 0:
        values, ids = raw.topk(k, dim=-1)
        parts += [values.double(), ids.double()]
    # One read from the device for tokens and logprobs (float64 holds both exactly).
    rows = torch.cat(parts, dim=1).tolist()
    token_ids = [int(r[0]) for r in rows]
    chosen = [r[1] for r in rows]
    top_lists: list[list[tuple[int, float]]] = [[] for _ in range(batch.batch_size)]
    for i, want in enumerate(batch.logprobs_k):
        if want:
            top_lists[i] = [
                (int(t), v) for t, v in zip(rows[i][2 + k : 2 + k + want], rows[i][2 : 2 + want], strict=True)
            ]
    return SamplerOutput(token_ids=token_ids, logprobs=chosen, top_logprobs=top_lists)
