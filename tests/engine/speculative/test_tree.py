"""Draft trees (speculative/tree.py): the tree attention mask of the C++ and torch backends against plain
attention over each node's own path, the tree walk's acceptance (greedy, and sampling checked against
the target distribution), the K/V compaction, and Medusa's choice of tree paths."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from tests.tree_attention import BS, TREE, check_tree_attention
from vivace.engine.attention.cpu_backend import CpuAttentionBackend
from vivace.engine.attention.torch_backend import TorchAttentionBackend
from vivace.engine.config import SamplingParams
from vivace.engine.cpu_ops import load_cpu_ops
from vivace.engine.scheduler import ScheduledSeq
from vivace.engine.sequence import Sequence
from vivace.engine.speculative.medusa_proposer import tree_choices
from vivace.engine.speculative.tree import DraftTree, compaction, walk

CPU = torch.device("cpu")


def _backends() -> list:
    ops = load_cpu_ops()
    backends = [TorchAttentionBackend(BS, CPU)]
    if ops is not None:
        backends.append(CpuAttentionBackend(BS, CPU, ops))
    return backends


@pytest.mark.parametrize("backend", _backends(), ids=lambda b: b.name)
@pytest.mark.parametrize("context", [1, 37, 70])
@pytest.mark.parametrize("heads,kv_heads", [(4, 1), (4, 2)])
def test_tree_rows_attend_to_the_context_and_their_own_path(backend, context, heads, kv_heads):
    check_tree_attention(backend, context, heads, kv_heads)


def test_tree_positions_follow_depth_and_chains_are_plain():
    item = ScheduledSeq(Sequence(0, "r", 0, [1, 2, 3], 3, SamplingParams(), 0), 2, 9, TREE.tokens, TREE)
    assert item.positions() == [2, 3, 3, 3, 4, 4, 4, 5, 6]
    assert TREE.depth() == 4 and item.draft_depth == 4
    assert DraftTree.chain([5, 6, 7]).is_chain and not TREE.is_chain
    assert TREE.path(7) == [11, 14, 17, 18] and TREE.path(-1) == []
    with pytest.raises(ValueError):
        DraftTree([1, 2], [-1, 1])  # a parent must come first


def _one_hot(tokens: list[int], vocab: int = 20) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(tokens), vocab).float()


def test_greedy_walk_follows_the_argmax_through_the_tree():
    # Rows: root, nodes 0..7. The argmax picks 11 (node 0), then 14 (node 3), then 17 (node 6), then 5.
    probs = _one_hot([11, 14, 0, 0, 17, 0, 0, 5, 0])
    assert walk(TREE, probs, True, None) == ([0, 3, 6], [11, 14, 17, 5])
    probs = _one_hot([12, 0, 9, 0, 0, 0, 0, 0, 0])  # node 1, then its row wants 9: no child has it
    assert walk(TREE, probs, True, None) == ([1], [12, 9])
    assert walk(TREE, _one_hot([3] * 9), True, None) == ([], [3])


def test_sampling_walk_emits_tokens_distributed_as_the_target():
    """First token ~ p(root); second token, given an accepted child, ~ that child's row (total variation)."""
    vocab = 20
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(1 + len(TREE), vocab, generator=gen) * 1.5, dim=1)
    probs[0, 11:14] += 0.2  # the root's candidates carry real mass, so every branch is exercised
    probs /= probs.sum(dim=1, keepdim=True)
    trials = 12000
    first: Counter[int] = Counter()
    after_11: Counter[int] = Counter()
    for _ in range(trials):
        _, tokens = walk(TREE, probs, False, gen)
        first[tokens[0]] += 1
        if tokens[0] == 11:
            after_11[tokens[1]] += 1
    tv_first = 0.5 * sum(abs(first[t] / trials - float(probs[0, t])) for t in range(vocab))
    assert tv_first < 0.03
    n11 = sum(after_11.values())
    tv_second = 0.5 * sum(abs(after_11[t] / n11 - float(probs[1, t])) for t in range(vocab))
    assert tv_second < 4 / math.sqrt(n11)


def test_compaction_moves_only_displaced_nodes():
    assert compaction([0, 1, 2], 40) == ([], [])  # a chain's prefix is already in place
    assert compaction([1, 5, 6], 40) == ([41, 45, 46], [40, 41, 42])
    assert compaction([0, 3, 6, 7], 10) == ([13, 16, 17], [11, 12, 13])


def test_medusa_tree_choices_are_best_first_and_closed_under_prefixes():
    accuracy = [[0.6, 0.25, 0.1], [0.5, 0.2, 0.1], [0.45, 0.2, 0.1]]
    choices = tree_choices(accuracy, 3, 6)
    assert choices == [(0,), (0, 0), (1,), (0, 0, 0), (1, 0), (0, 1)]
    for size in (3, 10, 20):
        chosen = tree_choices(accuracy, 3, size)
        assert len(chosen) == size
        assert all(path[:-1] in chosen[: chosen.index(path)] for path in chosen if len(path) > 1)
        # No path left out (whose parent was chosen) is estimated better than one chosen.
        left_out = [(*p, r) for p in [(), *chosen] if len(p) < 3 for r in range(3) if (*p, r) not in chosen]
        assert min(_score(accuracy, p) for p in chosen) >= max(_score(accuracy, p) for p in left_out)


def _score(accuracy: list[list[float]], path: tuple[int, ...]) -> float:
    return math.prod(accuracy[h][r] for h, r in enumerate(path))
