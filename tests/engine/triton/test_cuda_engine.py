"""End to end on a CUDA GPU (skipped without one): compiled Triton kernels and CUDA graphs give the
CPU path's results on a random-weight SmolLM2-135M-shaped model, and a step waits on the device once.

Runs in a child process: this folder's kernel modules are imported under Triton's interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CHECK = r"""
import os
import torch
from vivace.engine.config import SamplingParams
from vivace.engine.llm import LLM

prompts = [[int(t) for t in torch.randint(3, 49000, (n,), generator=torch.Generator().manual_seed(n))] for n in (5, 40, 300)]
params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, logprobs=0)
# VIVACE_TOKENIZER: a tokenizer file where the packaged model is not installed (bench/gpu_device.sh).
common = dict(quantization="none", max_model_len=1024, kv_cache_memory_bytes=256 << 20, tokenizer=os.environ.get("VIVACE_TOKENIZER"))

def run(**kwargs):
    llm = LLM("random:smollm2-135m@1", **common, **kwargs)
    outs = llm.generate(prompts, params, use_tqdm=False)
    return [o.outputs[0].token_ids for o in outs], [torch.tensor([lp.logprob for lp in o.outputs[0].logprobs]) for o in outs]

cpu_tokens, cpu_lps = run(device="cpu", dtype="float32", attention_backend="torch")
# float32 on the GPU, graphs on: the same tokens as the CPU reference, logprobs within float noise.
tokens, lps = run(device="cuda", dtype="float32")
assert tokens == cpu_tokens, (tokens, cpu_tokens)
for a, b in zip(lps, cpu_lps):
    torch.testing.assert_close(a, b, atol=2e-3, rtol=2e-3)
# bfloat16 (the CUDA default): graphs and eager agree; the first tokens still follow the reference.
g_tokens, g_lps = run(device="cuda")
e_tokens, e_lps = run(device="cuda", cuda_graphs=False)
for a, b in zip(g_lps, e_lps):
    torch.testing.assert_close(a, b, atol=5e-2, rtol=5e-2)
assert all(g[:4] == c[:4] for g, c in zip(g_tokens, cpu_tokens)), (g_tokens, cpu_tokens)

# One wait on the device per step: reading the sampled tokens. Prefill, graph-replayed decode and
# eager decode steps, greedy and top_p rows mixed, logprobs asked; no hidden copy from pageable memory, no .item().
import traceback
import warnings
def waits_in(step):
    # the device waits one call makes, each with the Python stack that made it
    seen = []
    def record(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" in str(message):
            seen.append("".join(traceback.format_stack(limit=6)[:-1]))
    # Switching the mode is left out of the count: torch's own switch waits on the device once.
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = record
            step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return seen
for graphs in (True, False):
    engine = LLM("random:smollm2-135m@1", **common, device="cuda", cuda_graphs=graphs).engine
    for i, prompt in enumerate(prompts):
        p = SamplingParams(temperature=0 if i % 2 else 0.8, top_p=0.9, max_tokens=12, ignore_eos=True, seed=i,
                           logprobs=2 if i == 0 else None)
        engine.add_request(str(i), prompt, p)
    engine.step()  # warm-up outside the count
    while engine.has_unfinished_requests():
        waits = waits_in(engine.step)
        assert len(waits) == 1, (graphs, len(waits), waits)
print("cuda engine matches")
"""


@pytest.mark.slow
def test_cuda_engine_matches_the_cpu_path() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "cuda engine matches" in proc.stdout
