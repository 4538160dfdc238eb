"""Report plots (matplotlib, headless) rendered to base64 PNG so an HTML report needs no other file."""

from __future__ import annotations

import base64
import io

from vivace.bench import metrics
from vivace.bench.result import BenchResult


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def latency_distributions(result: BenchResult) -> str:
    """Histograms of TTFT, ITL and E2E latency, one series per load level (base64 PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    series = {
        "TTFT (ms)": lambda recs: [metrics.ttft(r) for r in recs],
        "ITL (ms)": lambda recs: [x for r in recs for x in metrics.itls(r)],
        "E2E latency (ms)": lambda recs: [metrics.e2e(r) for r in recs],
    }
    for ax, (title, values_of) in zip(axes, series.items(), strict=True):
        per_level = [[v * 1000 for v in values_of(lv.level.records) if v is not None] for lv in result.levels]
        everything = [v for values in per_level for v in values]
        if not everything:
            continue
        lo, hi = min(everything), max(everything)
        bins = [lo + (hi - lo) * i / 20 for i in range(21)] if hi > lo else 1  # shared bins: comparable bars
        for lv, values in zip(result.levels, per_level, strict=True):
            if values:
                ax.hist(values, bins=bins, alpha=0.5, label=lv.level.label)
        ax.set_title(title)
        ax.set_ylabel("requests" if "ITL" not in title else "tokens")
    axes[0].legend(fontsize="small")
    return _png(fig)


def against_load(result: BenchResult) -> str:
    """Output tokens/s and TTFT (p50, p99) against the load levels (base64 PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [lv.level.value for lv in result.levels]
    kind = "concurrency" if all(lv.level.mode == "concurrency" for lv in result.levels) else "load level"
    labels = [lv.level.label for lv in result.levels]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    positions = x if kind == "concurrency" else list(range(len(x)))
    left.plot(positions, [lv.summary.output_throughput for lv in result.levels], marker="o")
    left.set_title("output throughput (tok/s)")
    for name in ("p50", "p99"):
        values = [getattr(lv.summary.ttft, name) for lv in result.levels]
        right.plot(positions, [v * 1000 if v is not None else float("nan") for v in values], marker="o", label=name)
    right.set_title("TTFT (ms)")
    right.legend(fontsize="small")
    for ax in (left, right):
        ax.set_xlabel(kind)
        ax.set_xticks(positions, labels)
        ax.grid(alpha=0.3)
    return _png(fig)
