"""Verification of proposed tokens: exact speculative sampling against the target model's distributions.

A speculating sequence with k proposed tokens d_0..d_{k-1} gets k + 1 rows of target probabilities
p_0..p_k (row i is the distribution of the token after d_{i-1}). Proposers are deterministic, so the
draft distribution is a point mass and rejection sampling reduces to: accept d_i with probability
p_i(d_i); at the first rejection emit a token drawn from p_i with d_i's mass removed (renormalised);
after k acceptances emit a bonus token drawn from p_k. The emitted tokens are distributed exactly as
sampling from the target one token at a time. Greedy rows are one-hot, so the same rule accepts
while d_i is the argmax and emits the argmax at the first mismatch.
"""

from __future__ import annotations

import torch

from vivace.engine.sampler import inverse_cdf


def verify(
    probs: torch.Tensor,
    drafts: list[list[int]],
    generators: list[torch.Generator | None],
    all_greedy: bool,
) -> list[list[int]]:
    """Tokens emitted per speculating sequence: its accepted drafts then one drawn token.

    `probs` [R, V] holds each sequence's len(draft) + 1 rows in order; `generators[i]` is sequence
    i's own (None: torch's global one). When `all_greedy`, rows are one-hot and nothing random is drawn.
    """
    device = probs.device
    ids = [t for draft in drafts for t in (*draft, 0)]  # the bonus row has no draft: 0 is a placeholder
    has_draft = torch.tensor(_draft_mask(drafts), dtype=torch.bool, device=device)
    draft_ids = torch.tensor(ids, dtype=torch.long, device=device).unsqueeze(1)
    p_draft = probs.gather(1, draft_ids).squeeze(1)
    if all_greedy:
        accept = (p_draft > 0.5) & has_draft
        choice = probs.argmax(dim=1)
    else:
        uniform = torch.empty(len(ids), dtype=probs.dtype, device=device)
        draw = torch.empty(len(ids), 1, dtype=probs.dtype, device=device)
        row = 0
        for draft, gen in zip(drafts, generators, strict=True):
            rows = slice(row, row + len(draft) + 1)
            uniform[rows].uniform_(generator=gen)
            draw[rows].uniform_(generator=gen)
            row += len(draft) + 1
        accept = (uniform < p_draft) & has_draft
        # Rejected: draw from p without the draft's mass; the bonus row (no draft) draws from p itself.
        residual = probs.scatter(1, draft_ids, torch.where(has_draft, 0.0, p_draft).unsqueeze(1))
        choice = inverse_cdf(residual, draw)  # proportional to the residual, unnormalised
    accepted, chosen = torch.stack([accept.long(), choice]).tolist()
    out = []
    row = 0
    for draft in drafts:
        tokens = []
        for i, token in enumerate(draft):
            if not accepted[row + i]:
                break
            tokens.append(token)
        tokens.append(chosen[row + len(tokens)])
        out.append(tokens)
        row += len(draft) + 1
    return out


def _draft_mask(drafts: list[list[int]]) -> list[bool]:
    """True for rows that score a draft token, False for each sequence's bonus row."""
    return [flag for draft in drafts for flag in (*([True] * len(draft)), False)]
