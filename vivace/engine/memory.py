"""Sizing the KV cache: a byte budget, or a fraction of the free memory of the engine's device."""

from __future__ import annotations

import torch

from vivace.engine.config import EngineConfig, InvalidParameterError
from vivace.engine.kv_groups import KVLayout, single_group


def free_memory_bytes(device: str) -> int:
    """Free memory of a CUDA device, or the host's available memory for CPU."""
    if device.startswith("cuda"):
        torch.cuda.empty_cache()  # memory freed while loading is only cached, not yet free
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30  # unknown platform: assume 4 GiB available


def kv_cache_blocks(
    config: EngineConfig, kv_bytes_per_token: int, max_model_len: int, layout: KVLayout | None = None
) -> int:
    """How many KV blocks to allocate: the budget's worth, capped at what max_num_seqs full contexts need.

    `kv_bytes_per_token`: bytes of one slot of a block (one KV group's layers, kv_groups.py); a
    full context needs a block per `block_size` tokens in each group, a window group only its window's.
    """
    layout = layout or single_group(1)
    block_bytes = kv_bytes_per_token * config.block_size
    if config.kv_cache_memory_bytes is not None:
        budget = config.kv_cache_memory_bytes
    else:
        budget = int(free_memory_bytes(config.device) * config.resolved_kv_cache_memory_fraction)
    blocks = budget // block_bytes
    if blocks < 1:
        raise InvalidParameterError(
            "kv_cache_memory_bytes",
            f"KV budget of {budget:,} bytes is below one block ({block_bytes:,} bytes for {config.block_size} tokens)",
        )
    per_seq = layout.blocks_needed(max_model_len, 1, config.block_size)  # one token a step, as decodes
    chunks = layout.blocks_needed(config.max_num_batched_tokens, config.max_num_batched_tokens, config.block_size)
    enough = config.max_num_seqs * per_seq + (chunks if layout.has_window else 0) + 1
    return int(min(blocks, enough))
