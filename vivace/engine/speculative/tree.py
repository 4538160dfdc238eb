"""Draft trees: several candidate continuations verified in one forward pass (Medusa's tree attention).

A tree's nodes are proposed tokens in topological order: node j's parent is an earlier node, or -1
for the root (the sequence's last token). Node j is computed as a row at rope position
root + depth(j) and its K/V is written at cache position root + 1 + j, so nodes of one tree occupy
consecutive slots after the root; the tree attention mask lets node j see the sequence's context up to
and including the root, then only its own ancestors and itself (`ancestor_masks`). A chain is the
tree whose node j has parent j - 1.

Verification walks the tree from the root (`walk`): at each node the target's distribution there
decides which child, if any, is accepted. Proposals are deterministic, so the exact rule for several
candidate children (SpecInfer's multi-candidate speculative sampling with point-mass drafts) is:
accept the first child with probability p(c), else remove c's mass from p, renormalise and try the
next; if none is accepted, draw from what is left. This samples exactly from p, so the emitted tokens
are distributed as plain sampling; greedy rows accept the child that is the argmax, if any. The
accepted nodes' K/V is then moved to the positions their tokens take (`compaction`).

Exact in distribution, a tree is not bitwise the chain: a node's ancestors sit at other cache
positions than the chain's tokens would, so the kernels sum the same terms in another order (other
key tiles, other SIMD lanes). Greedy output can then differ from plain decoding where two tokens'
logits are within rounding of each other, which activation-quantized (GGUF block) weights make more
frequent. That is why Medusa verifies a chain unless `tree=N` asks for a tree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MAX_NODES = 63  # the tree mask of a row is one 64-bit word: bit j = node j (bit 63 unused)


@dataclass(frozen=True)
class DraftTree:
    """Proposed tokens with parent links (-1 = the root); parents precede their children."""

    tokens: list[int]
    parents: list[int]

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.parents) or len(self.tokens) > MAX_NODES:
            raise ValueError(f"a draft tree needs one parent per token and at most {MAX_NODES} nodes")
        for j, parent in enumerate(self.parents):
            if not -1 <= parent < j:
                raise ValueError(f"node {j}'s parent {parent} must be -1 or an earlier node")

    @classmethod
    def chain(cls, tokens: list[int]) -> DraftTree:
        return cls(list(tokens), list(range(-1, len(tokens) - 1)))

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def is_chain(self) -> bool:
        return all(parent == j - 1 for j, parent in enumerate(self.parents))

    def depths(self) -> list[int]:
        """Depth of each node: 1 for the root's children."""
        depth: list[int] = []
        for parent in self.parents:
            depth.append(1 if parent < 0 else depth[parent] + 1)
        return depth

    def depth(self) -> int:
        """The longest path's length (how many tokens at most are accepted)."""
        return max(self.depths(), default=0)

    def path(self, node: int) -> list[int]:
        """The tokens from the root's first child down to `node` (node -1: none)."""
        tokens: list[int] = []
        while node >= 0:
            tokens.append(self.tokens[node])
            node = self.parents[node]
        return tokens[::-1]

    def ancestor_masks(self) -> list[int]:
        """Per node, a bitmask of the nodes it attends to: its ancestors and itself."""
        masks: list[int] = []
        for j, parent in enumerate(self.parents):
            masks.append((masks[parent] if parent >= 0 else 0) | (1 << j))
        return masks

    def ancestor_matrix(self) -> torch.Tensor:
        """[n, n] bool: row j is True at its ancestors and itself."""
        out = torch.zeros(len(self), len(self), dtype=torch.bool)
        for j, mask in enumerate(self.ancestor_masks()):
            out[j, [i for i in range(j + 1) if mask >> i & 1]] = True
        return out

    def children(self) -> dict[int, list[int]]:
        """Node -> its children in order (the root is -1)."""
        kids: dict[int, list[int]] = {}
        for j, parent in enumerate(self.parents):
            kids.setdefault(parent, []).append(j)
        return kids

    def truncated(self, max_nodes: int) -> DraftTree:
        """The first `max_nodes` nodes (still a tree: parents come first)."""
        return DraftTree(self.tokens[:max_nodes], self.parents[:max_nodes])


def walk(
    tree: DraftTree, probs: torch.Tensor, greedy: bool, generator: torch.Generator | None
) -> tuple[list[int], list[int]]:
    """(accepted nodes root-down, emitted tokens) of one sequence; `probs` [1 + len(tree), V] rows: root, then nodes.

    The emitted tokens are the accepted nodes' tokens then one token drawn at the last accepted node
    (or the root). Greedy rows must be one-hot (the processed distribution of a greedy request).
    """
    kids = tree.children()
    node, accepted = -1, []
    if greedy:
        choice = probs.argmax(dim=1).tolist()
        while True:
            token = choice[node + 1]
            nxt = next((c for c in kids.get(node, []) if tree.tokens[c] == token), None)
            if nxt is None:
                return accepted, [*(tree.tokens[j] for j in accepted), token]
            accepted.append(nxt)
            node = nxt
    while True:
        p = probs[node + 1].clone()
        nxt = None
        for child in kids.get(node, []):
            token = tree.tokens[child]
            total = float(p.sum())
            mass = float(p[token])
            u = float(torch.rand((), generator=generator, device=p.device))
            if total > 0 and u * total < mass:
                nxt = child
                break
            p[token] = 0.0
        if nxt is None:
            if float(p.sum()) <= 0:  # every candidate was rejected by rounding: fall back to p itself
                p = probs[node + 1]
            token = int(torch.multinomial(p, 1, generator=generator))
            return accepted, [*(tree.tokens[j] for j in accepted), token]
        accepted.append(nxt)
        node = nxt


def compaction(accepted: list[int], first_position: int) -> tuple[list[int], list[int]]:
    """(source, destination) cache positions moving accepted node j_i's K/V to first_position + i.

    Nodes are written at first_position + node; a chain's accepted prefix already lies in place and
    moves nothing. Sources are never below their destinations and increase, so a gather then a
    scatter in this order is safe.
    """
    moves = [(first_position + j, first_position + i) for i, j in enumerate(accepted) if j != i]
    return [s for s, _ in moves], [d for _, d in moves]
