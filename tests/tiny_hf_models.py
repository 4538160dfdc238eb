"""Tiny random-weight HF model directories that transformers loads as the reference, and the engine's
prompt logits to hold against it.

The models carry the packaged model's tokenizer, and weights ~N(0, 0.2): larger than transformers'
default init, so differences would show.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vivace.engine.config import SamplingParams
from vivace.engine.llm import LLM
from vivace.engine.loaders.gguf import load_gguf

# A two-layer Llama-shaped config with grouped-query attention, in the packaged tokenizer's vocabulary.
TINY_LLAMA = dict(
    vocab_size=49152,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=512,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
)


def write_random_hf_model(
    path: Path,
    config_cls: str,
    model_cls: str,
    config: dict,
    model_path: str,
    *,
    chat_template: bool = False,
    **tokenizer_config: object,
) -> torch.nn.Module:
    """transformers' `model_cls` on `config_cls(**config)`, seeded and saved under `path` with the tokenizer of
    the GGUF at `model_path` (and its chat template if asked); returns the model, the reference."""
    import transformers

    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**config)).float().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer = load_gguf(model_path).tokenizer
    tokenizer.backend.save(str(path / "tokenizer.json"))
    if chat_template:
        tokenizer_config["chat_template"] = tokenizer.chat_template
    (path / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", **tokenizer_config})
    )
    return model


def engine_prefill_logits(llm: LLM, ids: list[int]) -> tuple[int, torch.Tensor, int]:
    """Logits of every computed prompt position through scheduler -> runner -> model, in as many
    steps as the token budget cuts the prompt into: (first computed position, logits, steps).
    Positions before the first came from the prefix cache."""
    engine = llm.engine
    engine.add_request("ref", ids, SamplingParams(max_tokens=1))
    chunks, first = [], None
    try:
        with torch.inference_mode():
            while True:
                batch = engine.scheduler.schedule()
                (item,) = batch.prefills
                first = item.start if first is None else first
                inputs = engine.runner.prepare_inputs(batch)
                hidden = engine.model.forward(
                    inputs.input_ids, inputs.positions, inputs.attn_metadata, engine.runner.kv_cache
                )
                chunks.append(engine.model.compute_logits(hidden))
                engine.scheduler.finish_step(batch)
                if item.samples:
                    return first, torch.cat(chunks), len(chunks)
    finally:
        engine.abort("ref")
