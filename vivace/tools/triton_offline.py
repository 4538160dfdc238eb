"""The engine's Triton kernels compiled for a CUDA target on a machine without a GPU, and what they cost.

A compile-only Triton driver stands in for CUDA: the engine's own code (runner, model, kernel
wrappers) runs one step on CPU tensors of a model's shapes, and each kernel launch is compiled for
the target (sm_90, the H100/H200, by default) with the specialization a real launch would get
(dtypes, 16-byte alignment, strides), then skipped. ptxas's resource report and the SASS answer
what the interpreter cannot, before any GPU time is spent: does it compile, does anything go to
local memory, are the matrix products on tensor cores, are the loads 16 bytes wide.

    python -m vivace.tools.triton_offline            # a table for the benchmark shapes
    python -m vivace.tools.triton_offline --json     # one JSON object per kernel variant

Run it in a process where TRITON_INTERPRET is unset: the interpreter is chosen at import.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from vivace.engine.config import ModelConfig, SamplingParams
from vivace.engine.models.random_weights import PRESETS

DEFAULT_SHAPES = ["smollm2-135m", "llama-3.2-1b", "llama-3-8b"]


@dataclass
class CompiledVariant:
    """One specialization of one kernel, compiled for the target, with ptxas's and the SASS's facts."""

    shape: str
    step: str  # the first engine step that launched this variant
    kernel: str
    signature: str  # the argument types of this specialization, in order
    constants: str  # its constexpr values
    registers: int
    local_bytes: int  # per-thread local memory (spills, or arrays that left the registers)
    shared_bytes: int
    mma: int  # tensor-core instructions (HMMA / HGMMA) in the SASS
    wide_loads: int  # 16-byte global loads, plain or async into shared memory (LDG / LDGSTS .128)
    narrow_loads: int  # narrower global loads


class _CompileOnlyDriver:
    """Enough of a Triton driver for the JIT to specialize and compile launches for `target`."""

    def __init__(self, target: Any) -> None:
        self.target = target

    def get_current_target(self) -> Any:
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int) -> int:
        return 0

    def get_active_torch_device(self) -> torch.device:
        return torch.device("cpu")


@dataclass
class _Launch:
    step: str
    kernel: str
    compiled: Any  # triton.compiler.CompiledKernel
    signature: dict[str, Any]
    constants: dict[Any, Any]


@dataclass
class _Recorder:
    """The launches compiled so far; `step` labels the ones that come next."""

    step: str = ""
    launches: list[_Launch] = field(default_factory=list)


@contextlib.contextmanager
def compile_only(arch: int = 90) -> Iterator[_Recorder]:
    """Within the block, Triton launches compile for CUDA sm_`arch` and run nothing, once per variant."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.driver import driver

    if knobs.runtime.interpret:
        raise RuntimeError("TRITON_INTERPRET is set: the kernels were built for the interpreter, not compiled")
    target = GPUTarget("cuda", arch, 32)
    recorder = _Recorder()
    seen: set[Any] = set()

    def hook(*, key: Any, fn: Any, compile: dict[str, Any], **_: Any) -> bool:
        cache_key = (fn.name, str(key))
        if cache_key not in seen:
            seen.add(cache_key)
            src = ASTSource(fn.jit_function, compile["signature"], compile["constants"], compile["configs"][0])
            options = {name: compile[name] for name in ("num_warps", "num_ctas", "num_stages", "enable_fp_fusion")}
            kernel = triton.compile(src, target=target, options=options)
            recorder.launches.append(
                _Launch(recorder.step, fn.name, kernel, compile["signature"], compile["constants"])
            )
        return True  # skip the launch: there is no device

    previous_hook = knobs.runtime.jit_cache_hook
    driver.set_active(_CompileOnlyDriver(target))
    knobs.runtime.jit_cache_hook = hook
    try:
        yield recorder
    finally:
        knobs.runtime.jit_cache_hook = previous_hook
        driver._active = None  # the next use finds the real driver again (set_active would need one now)


def _run_engine_steps(cfg: ModelConfig, dtype: torch.dtype, recorder: _Recorder) -> None:
    """One mixed step (decodes + a fresh and a prefix-cached prefill) and the graph path's decode step."""
    from vivace.engine.config import EngineConfig
    from vivace.engine.cuda_graphs import DecodeGraphs
    from vivace.engine.kernels.select import select_kernels
    from vivace.engine.models.random_weights import random_weights
    from vivace.engine.models.registry import build_model
    from vivace.engine.runner import ModelRunner
    from vivace.engine.scheduler import ScheduledBatch, ScheduledSeq
    from vivace.engine.sequence import Sequence

    # The kernels see the shapes of heads, hidden size and cache; one layer and a small vocabulary do.
    small = copy.deepcopy(cfg)
    small.num_layers, small.vocab_size = 1, 512
    block_size, num_blocks, max_len = 16, 96, 512
    kernels = select_kernels(EngineConfig(attention_backend="triton", block_size=block_size), small, dtype)
    model = build_model(small, random_weights(small, 0, dtype), dtype, "none", kernels)
    runner = ModelRunner(model, kernels, num_blocks, block_size, "cpu", eos_token_ids=[])
    blocks = iter(range(num_blocks))

    def seq(seq_id: int, length: int) -> Sequence:
        s = Sequence(seq_id, str(seq_id), 0, [5] * length, length, SamplingParams(temperature=0), seq_id)
        s.block_table = [next(blocks) for _ in range(-(-length // block_size))]
        return s

    short, long_ = seq(0, 20), seq(1, 400)  # one split, several splits
    batch = ScheduledBatch(
        decodes=[ScheduledSeq(short, 19, 1), ScheduledSeq(long_, 399, 1)],
        prefills=[ScheduledSeq(seq(2, 40), 0, 40), ScheduledSeq(seq(3, 70), 32, 38)],
    )
    for recorder.step, step in (("mixed", batch), ("decode", ScheduledBatch(decodes=[ScheduledSeq(short, 19, 1)]))):
        inputs = runner.prepare_inputs(step)
        model.forward(inputs.input_ids, inputs.positions, inputs.attn_metadata, runner.kv_cache)
    recorder.step = "graph decode"
    graphs = DecodeGraphs(
        model,
        kernels.attention,
        runner.kv_cache,
        block_size,
        4,
        max_len,
        pad_block=0,
        device=torch.device("cpu"),
        num_sms=132,
    )
    graphs._forward(4)  # what a captured graph runs: static buffers, splits sized for max_len


def _resources(cubin: bytes, cuobjdump: str, nvdisasm: str) -> tuple[dict[str, int], str]:
    """ptxas's resource usage (REG, LOCAL, SHARED) and the SASS of one cubin."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        usage = subprocess.run(
            [cuobjdump, "--dump-resource-usage", str(path)], capture_output=True, text=True, check=True
        ).stdout
        sass = subprocess.run([nvdisasm, "-c", str(path)], capture_output=True, text=True, check=True).stdout
    found = dict(re.findall(r"\b(REG|LOCAL|SHARED|STACK):(\d+)", usage))
    return {name: int(value) for name, value in found.items()}, sass


def compile_shapes(shapes: list[str], arch: int = 90, dtype: torch.dtype = torch.bfloat16) -> list[CompiledVariant]:
    """Every kernel variant one engine step launches for each named preset shape, compiled for sm_`arch`."""
    from triton import knobs

    variants = []
    for name in shapes:
        with compile_only(arch) as recorder:
            _run_engine_steps(PRESETS[name], dtype, recorder)
        for launch in recorder.launches:
            usage, sass = _resources(
                launch.compiled.asm["cubin"], knobs.nvidia.cuobjdump.path, knobs.nvidia.nvdisasm.path
            )
            loads = re.findall(r"\bLDG(?:STS)?\.E(?:\.[A-Z0-9_]+)*", sass)
            variants.append(
                CompiledVariant(
                    shape=name,
                    step=launch.step,
                    kernel=launch.kernel,
                    signature=", ".join(str(v) for v in launch.signature.values()),
                    constants=", ".join(f"{v}" for v in launch.constants.values()),
                    registers=usage.get("REG", -1),
                    local_bytes=usage.get("LOCAL", 0) + usage.get("STACK", 0),
                    shared_bytes=usage.get("SHARED", 0),
                    mma=len(re.findall(r"\bH(?:G)?MMA\b", sass)),
                    wide_loads=sum(".128" in op for op in loads),
                    narrow_loads=sum(".128" not in op for op in loads),
                )
            )
    return variants


def markdown_table(variants: list[CompiledVariant]) -> str:
    """The resource report as a Markdown table, one row per kernel variant."""
    lines = [
        "| shape | step | kernel | registers | local bytes | shared bytes | tensor-core ops | 16 B loads | narrower loads |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        lines.append(
            f"| {v.shape} | {v.step} | {v.kernel.lstrip('_')} | {v.registers} | {v.local_bytes} | {v.shared_bytes:,} | {v.mma} "
            f"| {v.wide_loads} | {v.narrow_loads} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--shapes", default=",".join(DEFAULT_SHAPES), help=f"presets, comma-separated ({', '.join(PRESETS)})"
    )
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability x10 (90 = H100/H200)")
    parser.add_argument("--json", action="store_true", help="one JSON object per kernel variant instead of a table")
    args = parser.parse_args(argv)
    shapes = [s for s in args.shapes.split(",") if s]
    unknown = [s for s in shapes if s not in PRESETS]
    if unknown:
        parser.error(f"unknown shapes {unknown}; presets: {', '.join(PRESETS)}")
    variants = compile_shapes(shapes, args.arch)
    if args.json:
        for v in variants:
            print(json.dumps(asdict(v)))
    else:
        print(markdown_table(variants))
    return 0


if __name__ == "__main__":
    sys.exit(main())
