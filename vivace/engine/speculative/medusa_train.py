"""`vivace train-medusa`: Medusa heads trained by self-distillation on a frozen base model.

The base model answers the prompts greedily (continuous batching in the engine); one more forward
pass over each prompt + answer gives the final hidden state at every position. Head k learns to
predict, from the hidden state at position t, the model's own token at t + 1 + k, with
cross-entropy over the `head_vocab` most frequent answer tokens (the shared LM head's rows for
them, medusa_heads.py). Only the heads' weights train; they start at zero (each head then scores
like the LM head itself, as Medusa initialises them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vivace.engine.config import SamplingParams
from vivace.engine.kv_cache_manager import PrefixMatch
from vivace.engine.llm import LLM
from vivace.engine.models.linear import float_weight
from vivace.engine.scheduler import ScheduledBatch, ScheduledSeq
from vivace.engine.sequence import Sequence
from vivace.engine.speculative.medusa_heads import MedusaConfig, head_logits, save_medusa_heads

IGNORE = -100  # a target the heads cannot score (past the answer's end, or outside their vocabulary)
RANKS = 4  # guesses per head whose held-out accuracy is recorded


@dataclass
class TrainSettings:
    """What train-medusa does: how much data, how many heads, how long it trains."""

    num_prompts: int = 96
    max_tokens: int = 96  # tokens of each greedy answer
    num_heads: int = 4
    head_vocab: int = 4096
    epochs: int = 8
    batch_size: int = 256
    lr: float = 3e-3
    seed: int = 0


@dataclass
class TrainReport:
    """The run's size, time and each head's top-1 accuracy on held-out positions."""

    prompts: int
    positions: int
    generate_seconds: float
    train_seconds: float
    head_accuracy: list[float]


def final_hidden_states(llm: LLM, token_ids: list[int]) -> torch.Tensor:
    """The model's final hidden states [len(token_ids), hidden] over a sequence, in one forward pass."""
    engine = llm.engine
    seq = Sequence(-1, "train-medusa", 0, list(token_ids), len(token_ids), SamplingParams(), arrival_order=-1)
    engine.scheduler.kv.admit(seq, PrefixMatch(), len(token_ids))
    try:
        batch = ScheduledBatch(prefills=[ScheduledSeq(seq, 0, len(token_ids))])
        return engine.runner.hidden_states(batch).float().clone()  # a plain tensor, usable by autograd
    finally:
        engine.scheduler.kv.free(seq)


def distillation_data(
    llm: LLM, prompts: list[str], settings: TrainSettings
) -> tuple[torch.Tensor, list[list[int]], int]:
    """Hidden states [N, H] at every answer-predicting position, their sequences' tokens and answer starts.

    Returns (hidden, targets, count): targets[i] are the tokens at positions t + 2 .. t + 1 + K of row i.
    """
    conversations = [[{"role": "user", "content": p}] for p in prompts]
    params = SamplingParams(temperature=0.0, max_tokens=settings.max_tokens)
    outputs = llm.chat(conversations, params, use_tqdm=False)
    hidden_rows: list[torch.Tensor] = []
    targets: list[list[int]] = []
    k = settings.num_heads
    for out in outputs:
        tokens = list(out.prompt_token_ids) + list(out.outputs[0].token_ids)
        first = len(out.prompt_token_ids) - 1  # the row that predicts the answer's first token
        hidden = final_hidden_states(llm, tokens)
        for t in range(first, len(tokens) - 2):  # head 1 needs token t + 2
            hidden_rows.append(hidden[t])
            targets.append([tokens[t + 1 + j] if t + 1 + j < len(tokens) else IGNORE for j in range(1, k + 1)])
    return torch.stack(hidden_rows), targets, len(outputs)


def train_medusa(
    out_dir: str,
    llm: LLM,
    base_model: str,
    settings: TrainSettings,
    prompts: list[str],
    log: Callable[[str], None] = print,
) -> TrainReport:
    """Train heads for `llm`'s model on its greedy answers to `prompts` and save them in `out_dir`."""
    torch.manual_seed(settings.seed)
    start = time.perf_counter()
    hidden, targets, num_prompts = distillation_data(llm, prompts, settings)
    generated = time.perf_counter() - start
    log(f"distilled {len(targets)} positions from {num_prompts} prompts in {generated:.0f}s")
    target = torch.tensor(targets)
    known = target[target != IGNORE]
    counts = torch.bincount(known, minlength=llm.engine.model_config.vocab_size)
    vocab = counts.argsort(descending=True)[: min(settings.head_vocab, int((counts > 0).sum()))]
    index_of = torch.full_like(counts, IGNORE)
    index_of[vocab] = torch.arange(len(vocab))
    labels = torch.where(target == IGNORE, IGNORE, index_of[target.clamp(min=0)])
    proj = float_weight(llm.engine.model.lm_head)[vocab].float()
    hidden_size = hidden.shape[1]
    weight = torch.zeros(settings.num_heads, hidden_size, hidden_size, requires_grad=True)
    bias = torch.zeros(settings.num_heads, hidden_size, requires_grad=True)
    order = torch.randperm(len(hidden))
    held_out, train = order[: max(1, len(order) // 10)], order[max(1, len(order) // 10) :]
    optimizer = torch.optim.AdamW([weight, bias], lr=settings.lr, weight_decay=0.0)
    steps = settings.epochs * -(-len(train) // settings.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.lr, total_steps=steps, pct_start=0.1)
    train_start = time.perf_counter()
    for epoch in range(settings.epochs):
        total = 0.0
        for batch in train[torch.randperm(len(train))].split(settings.batch_size):
            logits = head_logits(hidden[batch], weight, bias, proj)
            loss = F.cross_entropy(logits.flatten(0, 1), labels[batch].flatten(), ignore_index=IGNORE)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
        log(f"epoch {epoch + 1}/{settings.epochs}: loss {total / len(train):.3f}")
    trained = time.perf_counter() - train_start
    with torch.no_grad():
        # [N, K, RANKS]: each head's best guesses in order; rank r is right where it equals the label.
        ranked = head_logits(hidden[held_out], weight, bias, proj).topk(min(RANKS, len(vocab)), dim=-1).indices
        scored = (labels[held_out] != IGNORE).unsqueeze(-1)
        hits = ((ranked == labels[held_out].unsqueeze(-1)) & scored).sum(0).float() / scored.sum(0).clamp(min=1)
    rank_accuracy = [[round(a, 3) for a in head] for head in hits.tolist()]
    accuracy = [head[0] for head in rank_accuracy]
    report = TrainReport(num_prompts, len(targets), round(generated, 1), round(trained, 1), accuracy)
    config = MedusaConfig(
        num_heads=settings.num_heads,
        hidden_size=hidden_size,
        vocab_size=llm.engine.model_config.vocab_size,
        base_model=base_model,
        trained_on={
            "prompts": num_prompts,
            "positions": len(targets),
            "max_tokens": settings.max_tokens,
            "epochs": settings.epochs,
            "generate_seconds": report.generate_seconds,
            "train_seconds": report.train_seconds,
            "held_out_top1_accuracy": accuracy,
            "held_out_rank_accuracy": rank_accuracy,  # [head][rank]: sizes Medusa's draft tree
        },
    )
    save_medusa_heads(out_dir, config, weight.detach(), bias.detach(), vocab)
    log(f"trained {settings.num_heads} heads in {trained:.0f}s; held-out top-1 accuracy per head: {accuracy}")
    return report
