"""Start-up alone: seconds from launching `vivace serve` to its first /health 200, `--runs` times.

The same measure `bench/serving.py` reports beside each workload, without the workload, so two
versions of the code can be put side by side through bench/ab.sh (which alternates the two trees):

    python bench/startup.py --model gemma3
    bash bench/ab.sh cd33829 2 .venv/bin/python bench/startup.py --model gemma3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from serving import _free_port, start_server

from vivace.engine.loaders.default_model import resolve_model_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="GGUF file or packaged model name: smollm2 (default), gemma3")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-model-len", type=int, default=2048)
    args = ap.parse_args()
    model = resolve_model_path(args.model)
    seconds = []
    with tempfile.TemporaryDirectory() as folder:
        for run in range(args.runs):
            server, startup = start_server(model, _free_port(), args.max_model_len, Path(folder) / "serve.log")
            server.terminate()
            server.wait(timeout=60)
            seconds.append(startup)
            print(f"run {run + 1}: {startup:.2f} s", flush=True)
    print(f"{Path(model).name}: start-up median {statistics.median(seconds):.2f} s over {args.runs} runs")


if __name__ == "__main__":
    main()
