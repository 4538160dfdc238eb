"""GPU engine benchmark: the card's ceilings, then vivace vs HF transformers on random-weight Llama shapes.

In one call, on one CUDA device:
  ceilings  device-to-device copy bandwidth ((read + write) bytes / s) and bf16 matmul TFLOP/s;
  single    one stream, prompt 32 tokens, 256 new tokens, greedy, EOS ignored: decode tokens/s
            (after the first token), against the floor (weight bytes / copy bandwidth);
  offline   256 requests (64 for the 8B shape), prompt and output lengths uniform in 100..1024
            (random.Random(seed)), EOS ignored: output and total tokens/s. vivace batches them all
            (continuous batching); transformers runs static batches of --hf-batch left-padded prompts,
            each generating its longest output, and is credited only the useful tokens.
Both engines get the same weights (models.random_weights, same preset and seed) in bfloat16.
Prints a Markdown table and writes JSON to bench/results/.

    python bench/gpu.py                                   # everything (several minutes on an H100)
    python bench/gpu.py --models llama-3.2-1b --part single --only vivace
    python bench/gpu.py --dry-run                         # the plan: shapes, floors' bytes, workloads
    python bench/gpu.py --device cpu --tiny               # smoke run of the whole pipeline on CPU
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vivace.engine.config import ModelConfig, SamplingParams  # noqa: E402
from vivace.engine.models.random_weights import PRESETS, num_parameters, random_weights  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SHAPES = ["smollm2-135m", "llama-3.2-1b", "llama-3-8b"]
PROMPT_VOCAB = 49152  # prompt ids stay inside the packaged tokenizer's vocabulary


@dataclass
class Plan:
    """What one run measures; `tiny` shrinks everything for a CPU smoke run."""

    device: str
    shapes: list[str]
    prompt_tokens: int = 32
    new_tokens: int = 256
    num_requests: int = 256
    num_requests_8b: int = 64
    min_len: int = 100
    max_len: int = 1024
    seed: int = 0
    copy_bytes: int = 1 << 30
    matmul_n: int = 8192

    @classmethod
    def tiny(cls, device: str) -> Plan:
        return cls(
            device,
            ["tiny"],
            prompt_tokens=8,
            new_tokens=8,
            num_requests=6,
            min_len=4,
            max_len=24,
            copy_bytes=1 << 20,
            matmul_n=128,
        )

    def requests_for(self, shape: str) -> int:
        return self.num_requests_8b if shape == "llama-3-8b" else self.num_requests


@dataclass
class Request:
    prompt_ids: list[int]
    output_len: int


def make_workload(num_requests: int, seed: int, lo: int, hi: int) -> list[Request]:
    """Requests with prompt and output lengths uniform in lo..hi (inclusive), reproducible from seed."""
    rng = random.Random(seed)
    work = []
    for _ in range(num_requests):
        n_in, n_out = rng.randint(lo, hi), rng.randint(lo, hi)
        work.append(Request([rng.randrange(3, PROMPT_VOCAB) for _ in range(n_in)], n_out))
    return work


def weight_bytes(cfg: ModelConfig, bytes_per_param: int = 2) -> int:
    """Bytes of weights a decode step reads (all of them, bf16)."""
    return num_parameters(cfg) * bytes_per_param


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _best_time(fn: Any, device: str, repeats: int) -> float:
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def measure_ceilings(plan: Plan) -> dict[str, float]:
    """Copy bandwidth (GB/s, read + write) and bf16 matmul TFLOP/s on the plan's device."""
    src = torch.empty(plan.copy_bytes, dtype=torch.uint8, device=plan.device)
    dst = torch.empty_like(src)
    t_copy = _best_time(lambda: dst.copy_(src), plan.device, repeats=20)
    n = plan.matmul_n
    a = torch.randn(n, n, device=plan.device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=plan.device, dtype=torch.bfloat16)
    t_mm = _best_time(lambda: a @ b, plan.device, repeats=10)
    return {"copy_gb_s": 2 * plan.copy_bytes / t_copy / 1e9, "bf16_tflop_s": 2 * n**3 / t_mm / 1e12}


class VivaceBench:
    """vivace's offline engine on a random-weight preset."""

    def __init__(
        self, shape: str, plan: Plan, max_num_seqs: int, max_batched_tokens: int, tokenizer: str | None
    ) -> None:
        from vivace.engine.llm import LLM

        dtype = "bfloat16" if plan.device.startswith("cuda") else "float32"
        self.llm = LLM(
            f"random:{shape}@{plan.seed}",
            device=plan.device,
            dtype=dtype,
            quantization="none",
            max_model_len=plan.max_len * 2,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_batched_tokens,
            enable_prefix_caching=False,
            tokenizer=tokenizer,
        )
        self.device = plan.device

    def single(self, prompt_ids: list[int], new_tokens: int) -> dict[str, float]:
        """Decode tok/s of one greedy stream: (n - 1) tokens after the first, over their time."""
        engine = self.llm.engine
        params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
        for request_id in ("warmup", "timed"):
            engine.add_request(request_id, prompt_ids, params)
            start = time.perf_counter()
            first = None
            while engine.has_unfinished_requests():
                outs = engine.step()  # each step ends by reading the sampled tokens: timings are synced
                if first is None and outs:
                    first = time.perf_counter()
            end = time.perf_counter()
        return {"ttft_s": first - start, "decode_tok_s": (new_tokens - 1) / (end - first)}

    def offline(self, work: list[Request]) -> dict[str, Any]:
        """All requests submitted at once; wall time to the last token, and where the steps' time went."""
        params = [SamplingParams(temperature=0, max_tokens=r.output_len, ignore_eos=True) for r in work]
        self.llm.generate([work[0].prompt_ids], params[0], use_tqdm=False)  # warm-up
        kinds = StepKinds(self.llm.engine)
        start = time.perf_counter()
        outs = self.llm.generate([r.prompt_ids for r in work], params, use_tqdm=False)
        wall = time.perf_counter() - start
        kinds.detach()
        produced = sum(len(o.outputs[0].token_ids) for o in outs)
        return {**_throughput(work, produced, wall), "steps": kinds.summary()}


class StepKinds:
    """Engine steps by kind while attached: decode-only (the kind CUDA graphs replay), mixed (decodes and
    prefill chunks, eager) and prefill-only; per kind the count, seconds in `engine.step` (each ends by
    reading its tokens, so the time is synced) and mean decode rows."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.stats: dict[str, list[float]] = {}  # kind -> [steps, seconds, decode rows]
        self._kind = ""
        schedule, step = engine.scheduler.schedule, engine.step

        def timed_schedule() -> Any:
            batch = schedule()
            if not batch.prefills and not batch.decodes:
                return batch  # nothing to run: not counted
            if batch.prefills:
                self._kind = "mixed" if batch.decodes else "prefill-only"
            else:
                self._kind = "decode-only"
            self._rows = len(batch.decodes)
            return batch

        def timed_step() -> Any:
            self._kind, self._rows = "", 0
            begin = time.perf_counter()
            out = step()
            if self._kind:
                entry = self.stats.setdefault(self._kind, [0, 0.0, 0])
                entry[0] += 1
                entry[1] += time.perf_counter() - begin
                entry[2] += self._rows
            return out

        engine.scheduler.schedule, engine.step = timed_schedule, timed_step

    def detach(self) -> None:
        """Stop timing: the engine's own methods again."""
        del self.engine.scheduler.schedule, self.engine.step

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            kind: {"steps": n, "seconds": secs, "ms_per_step": 1e3 * secs / n, "mean_decode_rows": rows / n}
            for kind, (n, secs, rows) in sorted(self.stats.items())
        }


class HFBench:
    """transformers' LlamaForCausalLM with the same random weights."""

    def __init__(self, shape: str, plan: Plan, batch_size: int) -> None:
        from transformers import LlamaConfig, LlamaForCausalLM
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        cfg = PRESETS[shape]
        dtype = torch.bfloat16 if plan.device.startswith("cuda") else torch.float32
        hf_cfg = LlamaConfig(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_kv_heads,
            head_dim=cfg.head_dim,
            rms_norm_eps=cfg.rms_norm_eps,
            rope_theta=cfg.rope_theta,
            rope_scaling=cfg.rope_scaling,
            max_position_embeddings=cfg.max_position_embeddings,
            tie_word_embeddings=cfg.tie_word_embeddings,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
        with torch.device("meta"):
            model = LlamaForCausalLM(hf_cfg)
        weights = random_weights(cfg, plan.seed, dtype, plan.device)
        model.load_state_dict(weights, strict=False, assign=True)
        # Built on the meta device (no throwaway init of 8B parameters); the one buffer comes back here.
        with torch.device(plan.device):
            model.model.rotary_emb = LlamaRotaryEmbedding(config=hf_cfg)
        if cfg.tie_word_embeddings:
            model.tie_weights()
        self.model = model.eval()
        self.device = plan.device
        self.batch_size = batch_size

    def _generate(self, batch: list[list[int]], new_tokens: int) -> None:
        width = max(len(p) for p in batch)
        ids = torch.tensor([[0] * (width - len(p)) + p for p in batch], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=self.device)
        with torch.inference_mode():
            self.model.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=0,
            )
        _sync(self.device)

    def single(self, prompt_ids: list[int], new_tokens: int) -> dict[str, float]:
        """Decode tok/s from two timed runs: 1 token (the prefill) and new_tokens."""
        self._generate([prompt_ids], 2)  # warm-up
        t = time.perf_counter()
        self._generate([prompt_ids], 1)
        ttft = time.perf_counter() - t
        t = time.perf_counter()
        self._generate([prompt_ids], new_tokens)
        total = time.perf_counter() - t
        return {"ttft_s": ttft, "decode_tok_s": (new_tokens - 1) / (total - ttft)}

    def offline(self, work: list[Request]) -> dict[str, float]:
        """Static batches in arrival order, each run to its longest output; useful tokens only."""
        self._generate([work[0].prompt_ids], 2)  # warm-up
        start = time.perf_counter()
        for i in range(0, len(work), self.batch_size):
            chunk = work[i : i + self.batch_size]
            self._generate([r.prompt_ids for r in chunk], max(r.output_len for r in chunk))
        wall = time.perf_counter() - start
        return _throughput(work, sum(r.output_len for r in work), wall)


def _throughput(work: list[Request], produced: int, wall: float) -> dict[str, float]:
    prompt = sum(len(r.prompt_ids) for r in work)
    return {
        "wall_s": wall,
        "output_tokens": produced,
        "output_tok_s": produced / wall,
        "total_tok_s": (prompt + produced) / wall,
    }


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}"


def markdown_table(results: dict[str, Any]) -> str:
    """The results as a Markdown table: ceilings first, then one row per shape and metric."""
    c = results.get("ceilings", {})
    lines = [
        f"Device: {results['device_name']}; copy {_fmt(c.get('copy_gb_s'))} GB/s, "
        f"bf16 matmul {_fmt(c.get('bf16_tflop_s'))} TFLOP/s; torch {results['torch']}.",
        "",
        "| shape | workload | metric | vivace | transformers | vivace / transformers | floor | vivace / floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for shape, r in results["shapes"].items():
        v, h = r.get("vivace", {}), r.get("transformers", {})
        if "single" in v or "single" in h:
            vs, hs = v.get("single", {}).get("decode_tok_s"), h.get("single", {}).get("decode_tok_s")
            floor = r.get("floor_tok_s")
            lines.append(
                f"| {shape} | single stream | decode tok/s | {_fmt(vs)} | {_fmt(hs)} | {_ratio(vs, hs)} "
                f"| {_fmt(floor)} | {_ratio(vs, floor)} |"
            )
        if "offline" in v or "offline" in h:
            for metric in ("output_tok_s", "total_tok_s"):
                vo, ho = v.get("offline", {}).get(metric), h.get("offline", {}).get(metric)
                lines.append(
                    f"| {shape} | {r['num_requests']} requests | {metric.replace('_tok_s', ' tok/s')} "
                    f"| {_fmt(vo)} | {_fmt(ho)} | {_ratio(vo, ho)} | - | - |"
                )
    return "\n".join(lines)


def describe_plan(plan: Plan) -> str:
    """The dry run's report: what would be measured, with each shape's weight bytes and workload size."""
    lines = [
        f"device {plan.device}; single stream: prompt {plan.prompt_tokens}, {plan.new_tokens} new tokens; "
        f"offline: lengths uniform {plan.min_len}..{plan.max_len}, seed {plan.seed}",
        "",
    ]
    lines += [
        "| shape | parameters | weight bytes (bf16) | offline requests | prompt tokens | output tokens |",
        "|---|---|---|---|---|---|",
    ]
    for shape in plan.shapes:
        cfg = PRESETS[shape]
        work = make_workload(plan.requests_for(shape), plan.seed, plan.min_len, plan.max_len)
        lines.append(
            f"| {shape} | {num_parameters(cfg):,} | {weight_bytes(cfg):,} | {len(work)} "
            f"| {sum(len(r.prompt_ids) for r in work):,} | {sum(r.output_len for r in work):,} |"
        )
    return "\n".join(lines)


def run(
    plan: Plan,
    parts: set[str],
    engines: set[str],
    hf_batch: int,
    max_num_seqs: int,
    max_batched: int,
    tokenizer: str | None = None,
) -> dict[str, Any]:
    """Measure everything the plan and flags ask for; returns the JSON-able results."""
    name = torch.cuda.get_device_name(plan.device) if plan.device.startswith("cuda") else "cpu"
    results: dict[str, Any] = {"device_name": name, "torch": torch.__version__, "plan": asdict(plan), "shapes": {}}
    results["ceilings"] = measure_ceilings(plan)
    print(f"ceilings: {results['ceilings']}", flush=True)
    prompt = make_workload(1, plan.seed + 1, plan.prompt_tokens, plan.prompt_tokens)[0].prompt_ids
    for shape in plan.shapes:
        work = make_workload(plan.requests_for(shape), plan.seed, plan.min_len, plan.max_len)
        floor = results["ceilings"]["copy_gb_s"] * 1e9 / weight_bytes(PRESETS[shape])
        entry: dict[str, Any] = {"floor_tok_s": floor, "num_requests": len(work)}
        results["shapes"][shape] = entry
        for engine in ("vivace", "transformers"):
            if engine not in engines:
                continue
            bench = (
                VivaceBench(shape, plan, max_num_seqs, max_batched, tokenizer)
                if engine == "vivace"
                else HFBench(shape, plan, hf_batch)
            )
            entry[engine] = {}
            if "single" in parts:
                entry[engine]["single"] = bench.single(prompt, plan.new_tokens)
            if "offline" in parts:
                entry[engine]["offline"] = bench.offline(work)
            print(f"{shape} {engine}: {entry[engine]}", flush=True)
            del bench
            if plan.device.startswith("cuda"):
                torch.cuda.empty_cache()
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run, print the table; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (only with --tiny)")
    ap.add_argument("--models", default=",".join(SHAPES), help=f"comma-separated presets (default: {','.join(SHAPES)})")
    ap.add_argument("--part", choices=["single", "offline", "all"], default="all")
    ap.add_argument("--only", choices=["vivace", "transformers"], help="run one engine only")
    ap.add_argument("--hf-batch", type=int, default=64, help="transformers' static batch size")
    ap.add_argument("--max-num-seqs", type=int, default=128, help="vivace: sequences running at once")
    ap.add_argument("--max-batched-tokens", type=int, default=4096, help="vivace: token budget per step")
    ap.add_argument(
        "--tokenizer",
        help="vivace's tokenizer (.gguf or HF dir; default: the packaged model's), e.g. a "
        "tensor-less GGUF from `python -m vivace.engine.loaders.tokenizer_file` where the model is not installed",
    )
    ap.add_argument("--tiny", action="store_true", help="the tiny preset and small workloads (smoke run)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit; needs no GPU")
    ap.add_argument("--out", type=Path, help="JSON output (default: bench/results/gpu-<time>.json)")
    args = ap.parse_args(argv)
    plan = Plan.tiny(args.device) if args.tiny else Plan(args.device, args.models.split(","))
    unknown = [s for s in plan.shapes if s not in PRESETS]
    if unknown:
        ap.error(f"unknown model preset(s) {', '.join(unknown)}; presets: {', '.join(PRESETS)}")
    if args.dry_run:
        print(describe_plan(plan))
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"bench/gpu.py measures a CUDA GPU, and torch {torch.__version__} sees none here. "
            "Run it on a machine with an NVIDIA GPU and a CUDA build of torch (pip install -e '.[cuda]'); "
            "--dry-run prints the plan, --device cpu --tiny smoke-tests the pipeline on CPU.",
            file=sys.stderr,
        )
        return 2
    if args.device == "cpu" and not args.tiny:
        ap.error("--device cpu runs only with --tiny (the real shapes would take hours on a CPU)")
    parts = {"single", "offline"} if args.part == "all" else {args.part}
    engines = {args.only} if args.only else {"vivace", "transformers"}
    results = run(plan, parts, engines, args.hf_batch, args.max_num_seqs, args.max_batched_tokens, args.tokenizer)
    table = markdown_table(results)
    print(table)
    out = args.out or RESULTS_DIR / f"gpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**results, "table": table}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
