"""The replicas' Prometheus metrics as one exposition: every sample labelled with its `replica`, plus
the deployment's total under `replica="all"` (sums; fractions averaged; start times not totalled)."""

from __future__ import annotations

from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

ALL = "all"
# Gauges that are a fraction per replica: their total is the mean, not the sum.
_MEANS = frozenset({"vivace_kv_cache_usage_perc", "vivace_spec_decode_mean_acceptance_length"})


def merge_metrics(texts: dict[str, str]) -> str:
    """One exposition from each replica's (`replica id -> /metrics text`)."""
    families: dict[str, tuple[str, str, list[Sample]]] = {}
    totals: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for replica, text in sorted(texts.items()):
        for family in text_string_to_metric_families(text):
            kind, doc, samples = families.setdefault(family.name, (family.type, family.documentation, []))
            for s in family.samples:
                samples.append(Sample(s.name, {**s.labels, "replica": replica}, s.value))
                totals[family.name][(s.name, tuple(sorted(s.labels.items())))].append(s.value)
    lines: list[str] = []
    for name, (kind, doc, samples) in families.items():
        exposed = f"{name}_total" if kind == "counter" else name  # the parser strips a counter's _total
        lines.append(f"# HELP {exposed} {_escape_help(doc)}")
        lines.append(f"# TYPE {exposed} {kind}")
        for s in samples:
            lines.append(_line(s.name, s.labels, s.value))
        if name.endswith("_created"):  # a start time: no total
            continue
        for (sample_name, labels), values in totals[name].items():
            value = sum(values) / len(values) if name in _MEANS else sum(values)
            lines.append(_line(sample_name, {**dict(labels), "replica": ALL}, value))
    return "\n".join(lines) + "\n"


def _line(name: str, labels: dict[str, str], value: float) -> str:
    inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
    return f"{name}{{{inner}}} {value!r}"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(doc: str) -> str:
    return doc.replace("\\", "\\\\").replace("\n", "\\n")
