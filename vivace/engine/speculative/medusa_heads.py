"""Medusa heads: K small residual blocks on the model's last hidden state, each guessing one token further ahead.

Head k (k = 1..K) computes z = h + SiLU(W_k h + b_k) from the final (normed) hidden state h of the
row that predicts token t+1, and scores z with the base model's own LM head, so it guesses token
t+1+k (the Medusa-1 design, with the LM head shared). Sharing keeps a head at hidden^2 + hidden
weights (0.33M for SmolLM2-135M) instead of a vocab x hidden projection each (28M, a fifth of that
model), so heads train on the CPU in minutes and cost little per step. The shared head scores only
the `vocab` tokens the heads were trained to predict (the most frequent in the model's own output),
so a step's guesses cost a [K, hidden] x [hidden, len(vocab)] matmul, not a full-vocabulary one.

A heads directory holds `medusa_config.json` (shapes, the base model it was trained on) and
`medusa_heads.safetensors` (`weight` [K, H, H], `bias` [K, H], `vocab` [V'] int64).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vivace.engine.config import InvalidParameterError

CONFIG_FILE = "medusa_config.json"
WEIGHTS_FILE = "medusa_heads.safetensors"


@dataclass(frozen=True)
class MedusaConfig:
    """What a heads directory's JSON says: its shapes and the base model it belongs to."""

    num_heads: int
    hidden_size: int
    vocab_size: int  # the base model's
    base_model: str  # as given to train-medusa (informational)
    trained_on: dict  # prompts, tokens, steps and seconds of the training run


def head_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """Logits [R, K, V'] of K heads over `proj`'s rows for final hidden states [R, H] (training and serving)."""
    z = hidden.unsqueeze(1) + F.silu(torch.einsum("rh,kgh->rkg", hidden, weight) + bias)
    return z @ proj.t()


class MedusaHeads:
    """Loaded heads bound to a model's LM head; `guess` turns hidden rows into each head's top token."""

    def __init__(
        self, config: MedusaConfig, weight: torch.Tensor, bias: torch.Tensor, vocab: torch.Tensor, proj: torch.Tensor
    ) -> None:
        self.config = config
        self.weight, self.bias, self.vocab, self.proj = weight, bias, vocab, proj

    @property
    def num_heads(self) -> int:
        return self.config.num_heads

    def guess(self, hidden: torch.Tensor, ranks: int = 1) -> list[list[list[int]]]:
        """Each head's `ranks` most likely tokens, best first, for each row of final hidden states [R, H]:
        [row][head][rank]."""
        logits = head_logits(hidden.float(), self.weight, self.bias, self.proj)
        if ranks == 1:
            return self.vocab[logits.argmax(dim=-1, keepdim=True)].tolist()
        return self.vocab[logits.topk(min(ranks, len(self.vocab)), dim=-1).indices].tolist()

    def rank_accuracy(self) -> list[list[float]]:
        """[head][rank]: how often each head's rank-r guess was right on train-medusa's held-out positions.

        Heads trained before ranks were recorded give their top-1 accuracy only; lower ranks are then
        estimated as each halving the one before.
        """
        recorded = self.config.trained_on.get("held_out_rank_accuracy")
        if recorded:
            return [list(map(float, head)) for head in recorded]
        top1 = self.config.trained_on.get("held_out_top1_accuracy") or [0.5] * self.num_heads
        return [[a * 0.5**r for r in range(4)] for a in top1]


def save_medusa_heads(
    path: str | Path, config: MedusaConfig, weight: torch.Tensor, bias: torch.Tensor, vocab: torch.Tensor
) -> None:
    """Write a heads directory (created if missing)."""
    from safetensors.torch import save_file

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {"weight": weight.float().contiguous(), "bias": bias.float().contiguous(), "vocab": vocab.long()}
    save_file(tensors, str(out / WEIGHTS_FILE))
    (out / CONFIG_FILE).write_text(json.dumps(asdict(config), indent=2) + "\n")


def load_medusa_heads(path: str, lm_head_weight: torch.Tensor) -> MedusaHeads:
    """Heads from directory `path` for a model whose LM head is `lm_head_weight` [vocab, hidden] (float).

    Raises InvalidParameterError naming `speculative` when the directory is missing, incomplete, or
    was trained for a model of another shape.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    root = Path(path)
    config_path, weights_path = root / CONFIG_FILE, root / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise InvalidParameterError(
            "speculative",
            f"no Medusa heads at {path!r}: expected a directory with {CONFIG_FILE} and {WEIGHTS_FILE} "
            "(written by `vivace train-medusa`)",
        )
    try:
        config = MedusaConfig(**json.loads(config_path.read_text()))
        tensors = load_file(str(weights_path))
        weight, bias, vocab = tensors["weight"].float(), tensors["bias"].float(), tensors["vocab"].long()
    except (ValueError, TypeError, KeyError, SafetensorError) as e:
        raise InvalidParameterError("speculative", f"Medusa heads at {path!r} are unreadable: {e}") from None
    vocab_size, hidden = lm_head_weight.shape
    k, h = config.num_heads, config.hidden_size
    if (config.vocab_size, h) != (vocab_size, hidden):
        raise InvalidParameterError(
            "speculative",
            f"Medusa heads at {path!r} were trained for a model with hidden size {h} and vocabulary "
            f"{config.vocab_size} ({config.base_model}); this model has {hidden} and {vocab_size}",
        )
    if weight.shape != (k, h, h) or bias.shape != (k, h) or vocab.ndim != 1 or not len(vocab):
        raise InvalidParameterError("speculative", f"Medusa heads at {path!r} do not match their {CONFIG_FILE}")
    if int(vocab.min()) < 0 or int(vocab.max()) >= vocab_size:
        raise InvalidParameterError("speculative", f"Medusa heads at {path!r} name tokens outside the vocabulary")
    device = lm_head_weight.device
    proj = lm_head_weight[vocab.to(device)].float().contiguous()
    return MedusaHeads(config, weight.to(device), bias.to(device), vocab.to(device), proj)
