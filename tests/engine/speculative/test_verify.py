"""Verification against the target's own distributions: emitted tokens are distributed as one-at-a-time sampling."""

from __future__ import annotations

import torch

from vivace.engine.speculative.verify import verify

V = 6
N = 20000  # sequences verified at once, each with the same rows and drafts


def _normalised(x: torch.Tensor) -> torch.Tensor:
    return x / x.sum(dim=-1, keepdim=True)


def _tv(counts: torch.Tensor, p: torch.Tensor) -> float:
    return 0.5 * (counts / counts.sum() - p).abs().sum().item()


def test_sampled_verification_reproduces_the_target_distribution():
    torch.manual_seed(0)
    k = 3
    p = _normalised(torch.rand(k + 1, V, generator=torch.Generator().manual_seed(1)).pow(3))
    draft = [int(p[0].argmax()), 0, int(p[2].argmin())]  # likely, arbitrary and unlikely proposals
    emitted = verify(p.repeat(N, 1), [draft] * N, [None] * N, all_greedy=False)
    assert all(1 <= len(e) <= k + 1 for e in emitted)
    # Token j is emitted only after d_0..d_{j-1} were; given that, it must follow p_j (rows are
    # the target's distributions after those prefixes).
    for j in range(k + 1):
        reached = [e for e in emitted if len(e) > j]
        counts = torch.bincount(torch.tensor([e[j] for e in reached]), minlength=V).float()
        expected_reach = N * float(torch.prod(torch.tensor([p[i, draft[i]] for i in range(j)])))
        assert abs(len(reached) - expected_reach) < 5 * expected_reach**0.5 + 1, (j, len(reached), expected_reach)
        if len(reached) > 2000:
            assert _tv(counts, p[j]) < 0.03, (j, counts, p[j])
        for e in reached:  # accepted tokens are the drafts themselves
            assert e[:j] == draft[:j]


def test_greedy_verification_accepts_while_the_draft_is_the_argmax():
    p = _normalised(torch.rand(4, V, generator=torch.Generator().manual_seed(2)))
    one_hot = torch.zeros_like(p).scatter_(1, p.argmax(dim=1, keepdim=True), 1.0)
    best = p.argmax(dim=1).tolist()
    wrong = (best[1] + 1) % V
    drafts = [best[:3], [best[0], wrong, best[2]], [wrong]]
    probs = torch.cat([one_hot, one_hot, one_hot[:2]])
    assert verify(probs, drafts, [None] * 3, all_greedy=True) == [best, best[:2], [best[0]]]
    # The sampled path gives the same on one-hot rows.
    assert verify(probs, drafts, [None] * 3, all_greedy=False) == [best, best[:2], [best[0]]]


def test_seeded_verification_repeats():
    p = _normalised(torch.rand(3, V, generator=torch.Generator().manual_seed(3)))
    runs = [
        verify(p.repeat(8, 1), [[1, 2]] * 8, [torch.Generator().manual_seed(i) for i in range(8)], False)
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
