"""`vivace bench run TARGET` and `vivace bench compare A.json B.json ...` (a typer sub-app)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vivace.bench.scores import DEFAULT_TARGETS

bench_app = typer.Typer(
    help="Benchmark a provider or server: TTFT, inter-token latency, throughput under load, scores and reports.",
    no_args_is_help=True,
    rich_markup_mode=None,  # as the main app's: help wraps, never cut
)


def _stdout() -> Console:
    """Standard output; wide when redirected, so tables in files and pipes keep their columns."""
    return Console(width=None if sys.stdout.isatty() else 160)


def _floats(text: str, option: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}", param_hint=option) from None
    if not values:
        raise typer.BadParameter("give at least one value", param_hint=option)
    return values


def _named_seconds(text: str | None, option: str, known: tuple[str, ...]) -> dict[str, float]:
    """`ttft=0.5,e2e=5` -> {"ttft": 0.5, "e2e": 5.0}."""
    out: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or name not in known:
            raise typer.BadParameter(
                f"expected NAME=SECONDS with NAME one of {', '.join(known)}, got {part!r}", param_hint=option
            )
        try:
            out[name] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{name}: {value!r} is not a number of seconds", param_hint=option) from None
        if not out[name] > 0:
            raise typer.BadParameter(f"{name}: a duration must be > 0 s, got {value}", param_hint=option)
    return out


def _workload(
    workload: str,
    num: int,
    max_tokens: int,
    input_len: int,
    output_len: int,
    dist: str,
    spread: float,
    seed: int,
    tokenizer: Any,
) -> tuple[list, dict[str, Any]]:
    from vivace.bench.workloads import chat_workload, jsonl_workload, random_workload

    if workload == "chat":
        return chat_workload(num, max_tokens), {"kind": "chat", "max_tokens": max_tokens}
    if workload == "random":
        items = random_workload(tokenizer, num, input_len, output_len, dist, spread, seed)
        return items, {
            "kind": "random",
            "input_len": input_len,
            "output_len": output_len,
            "dist": dist,
            "spread": spread,
            "seed": seed,
            "ignore_eos": True,
        }
    return jsonl_workload(workload, max_tokens), {"kind": "jsonl", "file": workload}


@bench_app.command("run")
def run(
    target: Annotated[
        str,
        typer.Argument(
            help="A provider id (local:, openai:MODEL, openai-compatible:MODEL@URL, ...) "
            "or a server's base URL (the model is read from /v1/models)."
        ),
    ],
    workload: Annotated[
        str,
        typer.Option(
            help="'chat' (built-in prompts), 'random' (exact token lengths) "
            "or a JSONL file of {prompt|messages, max_tokens}."
        ),
    ] = "chat",
    num_requests: Annotated[
        int | None,
        typer.Option("--num-requests", "-n", min=1, help="Requests per load level (default: 16, or the file's)."),
    ] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds per load level instead of a request count.")] = None,
    concurrency: Annotated[
        str | None, typer.Option("--concurrency", "-c", help="Requests in flight (default 1); a list sweeps: 1,4,16.")
    ] = None,
    rate: Annotated[
        str | None,
        typer.Option(
            help="Requests/s instead of a concurrency (a list sweeps; inf: all at "
            "once); --concurrency then caps requests in flight."
        ),
    ] = None,
    poisson: Annotated[bool, typer.Option("--poisson/--constant", help="Poisson arrivals or constant spacing.")] = True,
    warmup: Annotated[int, typer.Option(min=0, help="Warm-up requests, not counted.")] = 2,
    max_tokens: Annotated[
        int, typer.Option(min=1, help="Most tokens per reply (chat and JSONL workloads, judged answers).")
    ] = 128,
    input_len: Annotated[int, typer.Option(min=1, help="Random workload: prompt tokens.")] = 128,
    output_len: Annotated[int, typer.Option(min=1, help="Random workload: output tokens (EOS ignored).")] = 64,
    dist: Annotated[str, typer.Option(help="Random workload lengths: fixed, uniform or normal.")] = "fixed",
    spread: Annotated[float, typer.Option(help="Relative spread of uniform/normal lengths (0..1).")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed for random prompts and Poisson arrivals.")] = 0,
    slo: Annotated[
        str | None, typer.Option(help="Goodput SLO targets in seconds, e.g. ttft=0.5,tpot=0.05,e2e=5.")
    ] = None,
    targets: Annotated[str, typer.Option(help="Score targets in seconds (ttft, e2e, tpot).")] = "ttft=0.5,e2e=5",
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="Tokenizer (.gguf or HF dir) counting tokens where the "
            "server gives no usage; default: the packaged model's."
        ),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="API key for a base-URL target (never written to reports).")
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option(
            help="A provider id (or base URL) that scores the target's answers "
            "to reference questions 1..10, reported beside the speed."
        ),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the JSON report (every request's timeline).")
    ] = None,
    markdown_out: Annotated[Path | None, typer.Option("--markdown", help="Write a Markdown report.")] = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Write a self-contained HTML report with plots.")
    ] = None,
) -> None:
    """Run a benchmark against TARGET and report it."""
    from vivace.bench.load import Load, LoadError
    from vivace.bench.tokens import load_tokenizer
    from vivace.bench.workloads import WorkloadError

    if html_out is not None:  # found now, not after the whole run
        from vivace.bench.plots import plotting_unavailable

        if (missing := plotting_unavailable()) is not None:
            raise typer.BadParameter(missing, param_hint="--html")
    slo_targets = _named_seconds(slo, "--slo", ("ttft", "tpot", "e2e")) or None
    score_targets = _named_seconds(targets, "--targets", ("ttft", "tpot", "e2e")) or dict(DEFAULT_TARGETS)
    caps = [int(c) for c in _floats(concurrency or "1", "--concurrency")]
    try:
        tok = load_tokenizer(tokenizer)
        items, described = _workload(
            workload, num_requests or 16, max_tokens, input_len, output_len, dist, spread, seed, tok
        )
        if rate is not None:
            loads = [
                Load(
                    rate=r,
                    poisson=poisson,
                    concurrency=caps[0] if concurrency else None,
                    num_requests=num_requests,
                    duration=duration,
                    seed=seed,
                )
                for r in _floats(rate, "--rate")
            ]
        else:
            loads = [Load(concurrency=c, num_requests=num_requests, duration=duration, seed=seed) for c in caps]
    except (WorkloadError, LoadError, FileNotFoundError) as e:
        raise typer.BadParameter(str(e)) from None
    console = Console(stderr=True)
    result = asyncio.run(
        _run(
            target,
            api_key,
            items,
            loads,
            described,
            warmup,
            tok,
            slo_targets,
            score_targets,
            console,
            judge,
            max_tokens,
        )
    )
    from vivace.bench.report import print_report

    print_report(result, _stdout())
    _write_reports(result, json_out, markdown_out, html_out, console)


async def _run(
    target: str,
    api_key: str | None,
    items: list,
    loads: list,
    described: dict[str, Any],
    warmup: int,
    tok: Any,
    slo: dict[str, float] | None,
    targets: dict[str, float],
    console: Console,
    judge: str | None,
    max_tokens: int,
) -> Any:
    from vivace.bench.runner import run_benchmark
    from vivace.bench.target import TargetError, open_target

    judge_provider = None
    try:
        judge_provider = open_target(judge) if judge else None
        provider = open_target(target, api_key)
    except TargetError as e:
        if judge_provider is not None:
            await judge_provider.aclose()
        console.print(f"[red]error:[/] {e}", markup=True, highlight=False)
        raise typer.Exit(2) from None
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task("warm-up", total=None)

    def on_level(load: Any) -> None:
        what = f"c={load.concurrency}" if load.mode == "concurrency" else f"rate={load.rate:g}/s"
        total = load.num_requests if load.num_requests is not None else None
        progress.reset(task, total=total, description=f"{provider.id} {what}")

    try:
        with progress:
            result = await run_benchmark(
                provider,
                items,
                loads,
                workload=described,
                warmup=warmup,
                tokenizer=tok,
                slo=slo,
                targets=targets,
                on_level=on_level,
                on_done=lambda _record: progress.advance(task),
            )
        if judge_provider is not None:
            from vivace.bench.judge import run_judge

            console.print(f"judging answers with {judge_provider.id} ...", markup=False)
            result.judge = await run_judge(provider, judge_provider, max_tokens)
        return result
    finally:
        await provider.aclose()
        if judge_provider is not None:
            await judge_provider.aclose()


def _write_reports(
    result: Any, json_out: Path | None, markdown_out: Path | None, html_out: Path | None, console: Console
) -> None:
    from vivace.bench.report import markdown
    from vivace.bench.report_html import write_html
    from vivace.bench.report_json import write_json

    if json_out:
        write_json(result, json_out)
        console.print(f"JSON report: {json_out}", markup=False)
    if markdown_out:
        markdown_out.write_text(markdown(result), encoding="utf-8")
        console.print(f"Markdown report: {markdown_out}", markup=False)
    if html_out:
        write_html(result, html_out)
        console.print(f"HTML report: {html_out}", markup=False)


@bench_app.command("compare")
def compare(
    reports: Annotated[list[Path], typer.Argument(help="JSON reports written by `vivace bench run --json`.")],
    level: Annotated[
        str | None, typer.Option(help="Compare at this level (e.g. c=4); default: each report's first.")
    ] = None,
) -> None:
    """Leaderboards across reports: fastest first by TTFT, by output tokens/s, by total time."""
    from vivace.bench.compare import CompareError, load_entries, print_leaderboard
    from vivace.bench.report_json import ReportFormatError

    try:
        entries = load_entries(list(reports), level)
    except (CompareError, ReportFormatError) as e:
        raise typer.BadParameter(str(e), param_hint="REPORTS") from None
    print_leaderboard(entries, _stdout())
