"""A tiny random-weight Llama saved as an HF directory, and PEFT LoRA adapters for it made with peft itself:
random ones (B non-zero, so they change the output) and one trained for a few steps on CPU."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tests.tiny_hf_models import TINY_LLAMA, write_random_hf_model

CONFIG = {**TINY_LLAMA, "tie_word_embeddings": False}
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Random adapters: name -> peft LoraConfig arguments.
RANDOM_ADAPTERS = {
    "all-r8": dict(r=8, lora_alpha=16, target_modules=ALL_PROJECTIONS),
    "qv-down-r4-rslora": dict(r=4, lora_alpha=8, use_rslora=True, target_modules=["q_proj", "v_proj", "down_proj"]),
}
TRAIN_PROMPT = [1, 400, 401, 402, 403, 404, 405, 406]
TRAIN_TARGET = [900, 901, 902, 903, 904, 905, 906, 907]


@dataclass
class LoRAModels:
    """Where the base model and each adapter were written."""

    base: Path
    adapters: dict[str, Path]


def write_base(path: Path, model_path: str) -> None:
    """The tiny Llama (weights ~N(0, 0.2), so differences show) with the packaged model's tokenizer."""
    write_random_hf_model(path, "LlamaConfig", "LlamaForCausalLM", CONFIG, model_path, add_bos_token=False)


def load_base(path: Path) -> torch.nn.Module:
    """The base model as transformers loads it."""
    import transformers

    return transformers.LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()


def write_random_adapter(base: Path, out: Path, seed: int, **lora_args: object) -> None:
    """A peft adapter with every A and B drawn at random (peft starts B at zero, which would change nothing)."""
    import peft

    model = peft.get_peft_model(load_base(base), peft.LoraConfig(**lora_args))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.15)
    model.save_pretrained(out, safe_serialization=True)


def write_trained_adapter(base: Path, out: Path, steps: int = 40) -> None:
    """A rank-4 adapter on q/v/down trained with Adam until the base model continues TRAIN_PROMPT with TRAIN_TARGET."""
    import peft

    torch.manual_seed(1)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    model = peft.get_peft_model(load_base(base), config)
    model.train()
    ids = torch.tensor([TRAIN_PROMPT + TRAIN_TARGET])
    labels = ids.clone()
    labels[0, : len(TRAIN_PROMPT)] = -100  # learn the continuation only
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(out, safe_serialization=True)


def write_lora_models(root: Path, model_path: str) -> LoRAModels:
    """The base model and every adapter under `root`."""
    base = root / "base"
    write_base(base, model_path)
    adapters = {}
    for seed, (name, args) in enumerate(RANDOM_ADAPTERS.items()):
        adapters[name] = root / name
        write_random_adapter(base, adapters[name], seed, **args)
    adapters["trained"] = root / "trained"
    write_trained_adapter(base, adapters["trained"])
    return LoRAModels(base, adapters)


def peft_reference(base: Path, adapter: Path | None) -> torch.nn.Module:
    """transformers' model with peft's adapter applied (the base model alone for None)."""
    import peft

    model = load_base(base)
    return model if adapter is None else peft.PeftModel.from_pretrained(model, adapter).eval()


def peft_greedy(reference: torch.nn.Module, ids: list[int], max_tokens: int) -> tuple[list[int], torch.Tensor]:
    """transformers' greedy continuation and the logprob of each chosen token."""
    with torch.inference_mode():
        tokens = list(ids)
        for _ in range(max_tokens):
            tokens.append(int(reference(torch.tensor([tokens])).logits[0, -1].argmax()))
        logits = reference(torch.tensor([tokens])).logits[0, len(ids) - 1 : -1]
    out = tokens[len(ids) :]
    chosen = torch.log_softmax(logits.float(), dim=-1).gather(1, torch.tensor(out)[:, None])[:, 0]
    return out, chosen
