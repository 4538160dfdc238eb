"""The engine's Triton kernels compile for the H100/H200 (sm_90) without a GPU, and compile well.

The interpreter tests in this folder check what the kernels compute; this checks what the real
compiler makes of them, on the launches one engine step makes for each benchmark shape: they
compile, nothing goes to local memory, the attention products run on tensor cores and the K/V
rows are read 16 bytes at a time. Run in a child process: this folder's kernels are interpreted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="triton is not installed (pip install triton); kernel tests skipped")

SHAPES = ["smollm2-135m", "llama-3.2-1b", "llama-3-8b"]
KERNELS = {
    "_rms_norm_kernel",
    "_rotary_store_kernel",
    "_gated_act_kernel",
    "_decode_partial_kernel",
    "_decode_reduce_kernel",
    "_prefill_kernel",
}
ATTENTION = {"_decode_partial_kernel", "_prefill_kernel"}


@pytest.fixture(scope="module")
def variants() -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-m", "vivace.tools.triton_offline", "--json", "--shapes", ",".join(SHAPES)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_every_kernel_compiles_for_every_shape(variants: list[dict]) -> None:
    for shape in SHAPES:
        assert {v["kernel"] for v in variants if v["shape"] == shape} == KERNELS, shape
    steps = {(v["step"], v["kernel"]) for v in variants}
    # The graph path's own specialization (context lengths from its int64 row buffer) is compiled too.
    assert ("graph decode", "_decode_partial_kernel") in steps


def test_nothing_spills_to_local_memory(variants: list[dict]) -> None:
    spilled = [(v["shape"], v["kernel"], v["local_bytes"]) for v in variants if v["local_bytes"]]
    assert not spilled
    assert all(0 < v["registers"] <= 255 for v in variants)


def test_attention_runs_on_tensor_cores_with_16_byte_loads(variants: list[dict]) -> None:
    for v in variants:
        if v["kernel"] in ATTENTION:
            assert v["mma"] > 0, v
            assert v["wide_loads"] > 0, v
