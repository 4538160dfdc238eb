"""bench/gpu.py without a GPU: the plan, the clear refusal, and a tiny run of the whole pipeline on CPU."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[3] / "bench" / "gpu.py"


@pytest.fixture(scope="module")
def gpu_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_workload_is_reproducible_and_in_range(gpu_bench: ModuleType) -> None:
    work = gpu_bench.make_workload(256, 0, 100, 1024)
    assert work == gpu_bench.make_workload(256, 0, 100, 1024)
    assert work != gpu_bench.make_workload(256, 1, 100, 1024)
    assert all(100 <= len(r.prompt_ids) <= 1024 and 100 <= r.output_len <= 1024 for r in work)
    assert all(3 <= t < gpu_bench.PROMPT_VOCAB for r in work for t in r.prompt_ids)


def test_dry_run_prints_the_plan(gpu_bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_bench.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "| llama-3-8b | 8,030,261,248 | 16,060,522,496 | 64 |" in out
    assert "| llama-3.2-1b | 1,235,814,400 | 2,471,628,800 | 256 |" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without CUDA")
def test_refuses_clearly_without_cuda(gpu_bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_bench.main([]) == 2
    assert "measures a CUDA GPU" in capsys.readouterr().err


def test_rejects_unknown_presets(gpu_bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        gpu_bench.main(["--dry-run", "--models", "llama-3-8b,gpt-9"])
    assert "unknown model preset(s) gpt-9" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_cpu_run_measures_both_engines(
    gpu_bench: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vivace.engine.loaders.default_model import default_model_path
    from vivace.engine.loaders.tokenizer_file import write_tokenizer_gguf

    out, tokenizer = tmp_path / "gpu.json", tmp_path / "tokenizer.gguf"
    write_tokenizer_gguf(default_model_path(), str(tokenizer))  # what the GPU runs carry (bench/gpu_device.sh)
    assert gpu_bench.main(["--device", "cpu", "--tiny", "--tokenizer", str(tokenizer), "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    tiny = results["shapes"]["tiny"]
    work = gpu_bench.make_workload(6, 0, 4, 24)
    for engine in ("vivace", "transformers"):
        assert tiny[engine]["single"]["decode_tok_s"] > 0
        assert tiny[engine]["offline"]["output_tokens"] == sum(r.output_len for r in work)  # EOS ignored
    # Every output token but each request's first (its prefill step's) came from one decode row of a step.
    steps = tiny["vivace"]["offline"]["steps"]
    decode_rows = sum(kind["steps"] * kind["mean_decode_rows"] for kind in steps.values())
    assert round(decode_rows) == sum(r.output_len for r in work) - len(work)
    assert steps["decode-only"]["steps"] > 0 and steps["decode-only"]["ms_per_step"] > 0
    assert results["ceilings"]["copy_gb_s"] > 0
    assert "| tiny | single stream | decode tok/s |" in capsys.readouterr().out


@pytest.mark.slow
def test_profile_counts_each_steps_ops_on_cpu(tmp_path: Path) -> None:
    """bench/gpu_profile.py's pipeline on CPU: per-step op counts scale with the layers, not the batch."""
    spec = importlib.util.spec_from_file_location("bench_gpu_profile", SCRIPT.parent / "gpu_profile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "profile.json"
    argv = ["--device", "cpu", "--models", "tiny", "--steps", "3", "--batch", "1", "--batch", "4", "--out", str(out)]
    assert module.main(argv) == 0
    results = json.loads(out.read_text())["results"]
    assert [(r["batch"], r["steps"], r["layers"]) for r in results] == [(1, 3, 2), (4, 3, 2)]
    for r in results:
        linears = [k for k in r["top"] if k["name"] == "aten::linear"]
        # per layer: q/k/v, o, gate, up, down (unfused on the torch path) or fewer; plus the LM head
        assert linears and 3 <= linears[0]["calls_per_step"] <= 8 * r["layers"] + 1
        assert r["wall_us_per_step"] >= r["kernel_us_per_step"] > 0
