"""Quality of the CPU weight formats: teacher-forced top-1 agreement with the float32 reference on a held text.

Every position of the text is predicted from the true prefix; a format agrees where its most likely
next token is the float32 model's. vivace's formats ("gguf": the file's own 4-bit blocks; "int8")
and, when given a llama-server URL, llama.cpp on the same GGUF (one request per position, its prompt
cache reusing the prefix) are scored against the same float32 predictions.

    python bench/quality_cpu.py                                    # vivace's formats, Python's LICENSE.txt
    python bench/quality_cpu.py --llama-server http://127.0.0.1:8090 --max-tokens 1024

The default text is the license shipped with the Python standard library (prose nobody here wrote).
"""

from __future__ import annotations

import argparse
import json
import os
import sysconfig
import time
from pathlib import Path

import torch

from vivace.engine.config import SamplingParams
from vivace.engine.llm import LLM
from vivace.engine.scheduler import ScheduledBatch, ScheduledSeq
from vivace.engine.sequence import Sequence

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CHUNK = 256  # prompt tokens per forward pass (bounds the logits' memory)


def default_text() -> str:
    """Path of the Python standard library's LICENSE.txt."""
    return os.path.join(sysconfig.get_path("stdlib"), "LICENSE.txt")


@torch.inference_mode()
def vivace_top1(llm: LLM, ids: list[int]) -> torch.Tensor:
    """For each position p < len(ids) - 1, the engine model's most likely token after ids[: p + 1]."""
    engine = llm.engine
    runner, model = engine.runner, engine.model
    blocks = -(-len(ids) // runner.block_size)
    first = int(model.kv_layout.has_window)  # block 0 is a hybrid pool's null block
    tables = [list(range(first + g * blocks, first + (g + 1) * blocks)) for g in range(runner.num_groups)]
    seq = Sequence(
        0, "quality", 0, list(ids), len(ids), SamplingParams(), 0, block_table=tables[0], group_tables=tables[1:]
    )
    predictions = []
    for start in range(0, len(ids) - 1, CHUNK):
        batch = ScheduledBatch(prefills=[ScheduledSeq(seq, start, min(CHUNK, len(ids) - 1 - start))])
        inputs = runner.prepare_inputs(batch)
        hidden = model.forward(inputs.input_ids, inputs.positions, inputs.attn_metadata, runner.kv_cache)
        predictions.append(runner.kernels.argmax_rows(model.compute_logits(hidden)))
    return torch.cat(predictions)


def llama_server_top1(url: str, ids: list[int]) -> torch.Tensor:
    """The same predictions from llama-server: greedy one-token completions of each prefix (prompt cache on)."""
    import httpx

    out = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for p in range(len(ids) - 1):
            body = {
                "prompt": ids[: p + 1],
                "n_predict": 1,
                "temperature": 0,
                "cache_prompt": True,
                "return_tokens": True,
            }
            response = client.post("/completion", json=body)
            response.raise_for_status()
            out.append(response.json()["tokens"][0])
    return torch.tensor(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="GGUF path (default: the packaged SmolLM2-135M Q4_1)")
    parser.add_argument("--text", default=default_text(), help="held text file (default: Python's LICENSE.txt)")
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--formats", default="gguf,int8", help="vivace weight formats to score")
    parser.add_argument("--llama-server", default=None, help="URL of a llama-server on the same GGUF")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--kv-cache-dtype",
        default="auto",
        help="KV cache of the scored formats (auto: float16; the CPU kernels take float32, bfloat16, float16 or int8)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    text = Path(args.text).read_text(encoding="utf-8", errors="replace")
    common = dict(kv_cache_memory_bytes=256 << 20, num_threads=args.threads, enable_prefix_caching=False)
    reference_llm = LLM(args.model, quantization="none", **common)
    ids = reference_llm.tokenizer.encode(text)[: args.max_tokens]
    reference = vivace_top1(reference_llm, ids)
    del reference_llm
    rows = []
    for fmt in [f for f in args.formats.split(",") if f]:
        t0 = time.perf_counter()
        llm = LLM(args.model, quantization=fmt, kv_cache_dtype=args.kv_cache_dtype, **common)
        predictions = vivace_top1(llm, ids)
        rows.append(
            {
                "engine": f"vivace {fmt}",
                "agreement": (predictions == reference).float().mean().item(),
                "seconds": time.perf_counter() - t0,
            }
        )
    if args.llama_server:
        t0 = time.perf_counter()
        predictions = llama_server_top1(args.llama_server, ids)
        rows.append(
            {
                "engine": "llama-server",
                "agreement": (predictions == reference).float().mean().item(),
                "seconds": time.perf_counter() - t0,
            }
        )
    print(f"held text: {args.text} ({len(ids)} tokens; {len(ids) - 1} positions scored)")
    print("| engine | top-1 agreement with float32 |\n|---|---|")
    for row in rows:
        print(f"| {row['engine']} | {row['agreement']:.4f} |")
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"quality-cpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"text": args.text, "tokens": len(ids), "rows": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
