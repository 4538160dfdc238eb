"""Multi-LoRA throughput: 64 requests spread over 4 adapters vs the same 64 requests on the base model alone.

Two engines on the same model, side by side in one run: one without LoRA (the base model, as served
today), one with 4 rank-`--rank` adapters on every q/k/v/o/gate/up/down projection (PEFT files with
random weights, written to a temporary directory). The LoRA engine runs the workload twice: every
request on the base model (what enabling LoRA costs when no request uses it), and the requests
spread round-robin over the 4 adapters (every step mixes them). The three runs alternate `--rounds`
times; each reports generated tokens/s over the whole batch (prefill included). Printed: the median
rate of each, and the median over rounds of each one's ratio to the base model's run of the same
round (adjacent runs, so a machine whose load drifts skews the ratio less than the rates).

    python bench/lora.py                          # the packaged SmolLM2-135M, CPU defaults
    python bench/lora.py --device cuda --rank 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vivace.engine.config import ModelConfig, SamplingParams  # noqa: E402
from vivace.engine.llm import LLM  # noqa: E402

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def projection_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """(in, out) features of each projection LoRA targets."""
    q, kv, hidden, inter = (
        cfg.num_heads * cfg.head_dim,
        cfg.num_kv_heads * cfg.head_dim,
        cfg.hidden_size,
        cfg.intermediate_size,
    )
    return {
        "self_attn.q_proj": (hidden, q),
        "self_attn.k_proj": (hidden, kv),
        "self_attn.v_proj": (hidden, kv),
        "self_attn.o_proj": (q, hidden),
        "mlp.gate_proj": (hidden, inter),
        "mlp.up_proj": (hidden, inter),
        "mlp.down_proj": (inter, hidden),
    }


def write_adapter(path: Path, cfg: ModelConfig, rank: int, seed: int) -> str:
    """A PEFT LoRA adapter with random weights on every projection of every layer."""
    path.mkdir(parents=True)
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(cfg.num_layers):
        for module, (fan_in, fan_out) in projection_shapes(cfg).items():
            key = f"base_model.model.model.layers.{layer}.{module}"
            tensors[key + ".lora_A.weight"] = torch.randn(rank, fan_in, generator=generator) * 0.01
            tensors[key + ".lora_B.weight"] = torch.randn(fan_out, rank, generator=generator) * 0.01
    save_file(tensors, str(path / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(PROJECTIONS)}
    (path / "adapter_config.json").write_text(json.dumps(config))
    return str(path)


def throughput(llm: LLM, prompts: list[list[int]], new_tokens: int, loras: list[str | None]) -> float:
    """Generated tokens/s for the whole batch, from submission to the last token."""
    llm.engine.scheduler.kv.reset_prefix_cache()
    params = SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True)
    start = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False, lora=loras)
    elapsed = time.perf_counter() - start
    return sum(len(o.outputs[0].token_ids) for o in outs) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model path or packaged name (default: smollm2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    common = dict(device=args.device, max_num_seqs=args.requests, max_num_batched_tokens=2048)
    base = LLM(args.model, **common)
    cfg = base.engine.model_config
    generator = torch.Generator().manual_seed(0)
    prompts = [
        [int(t) for t in torch.randint(100, cfg.vocab_size - 100, (args.prompt_tokens,), generator=generator)]
        for _ in range(args.requests)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        adapters = {f"a{i}": write_adapter(Path(tmp) / f"a{i}", cfg, args.rank, i) for i in range(args.adapters)}
        lora = LLM(args.model, **common, max_loras=args.adapters, max_lora_rank=args.rank, lora_modules=adapters)
    names = list(adapters)
    spread = [names[i % len(names)] for i in range(args.requests)]
    runs = {
        "base model, LoRA off": (base, [None] * args.requests),
        "LoRA engine, no adapter": (lora, [None] * args.requests),
        f"LoRA engine, {args.adapters} adapters": (lora, spread),
    }
    for llm, loras in runs.values():  # warm-up
        throughput(llm, prompts[:4], 4, loras[:4])
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (llm, loras) in runs.items():
            rates[name].append(throughput(llm, prompts, args.new_tokens, loras))
    print(
        f"{args.requests} requests x ({args.prompt_tokens} prompt + {args.new_tokens} new tokens), "
        f"rank-{args.rank} adapters on every projection, {args.device}, median of {args.rounds} rounds"
    )
    reference = rates["base model, LoRA off"]
    for name, values in rates.items():
        ratio = statistics.median(v / r for v, r in zip(values, reference, strict=True))
        print(f"  {name:28s} {statistics.median(values):8.1f} tok/s  {ratio:5.2f}x")


if __name__ == "__main__":
    main()
