"""The `vivace` command line: generate, chat, batch and train-medusa on the local engine."""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vivace import __version__
from vivace.bench.cli import bench_app
from vivace.chat_commands import ChatSession, ExitChat, run_command
from vivace.cli_backends import Reply
from vivace.engine.chat_template import ChatTemplateError
from vivace.engine.config import InvalidParameterError, SamplingParams
from vivace.engine.request_params import sampling_params_from_fields
from vivace.engine_flags import FLAG_HELP, with_engine_flags
from vivace.flows.cli import flow_app

if TYPE_CHECKING:  # the engine pulls in torch; import it only when a command runs
    from vivace.cli_backends import LocalBackend, RemoteBackend
    from vivace.engine.llm import LLM

app = typer.Typer(
    name="vivace",
    help="vivace: a fast LLM serving system. Runs the packaged SmolLM2-135M-Instruct unless --model is given.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # subcommands inherit it
    rich_markup_mode=None,  # plain help: wraps long option names and words instead of cutting them at 80 columns
)
app.add_typer(bench_app, name="bench")
app.add_typer(flow_app, name="flow")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"vivace {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """vivace: a fast LLM serving system. Runs the packaged SmolLM2-135M-Instruct unless --model is given."""


ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", help="A .gguf file, an HF-layout directory, or a packaged model: smollm2 (default) or gemma3."
    ),
]
DeviceOpt = Annotated[str, typer.Option(help="Device to run on: cpu or cuda.")]
SpeculativeOpt = Annotated[str | None, typer.Option("--speculative", help=FLAG_HELP["speculative"])]
MaxTokensOpt = Annotated[int, typer.Option(min=1, help="Most tokens to generate per reply.")]
TemperatureOpt = Annotated[float, typer.Option(min=0.0, help="Sampling temperature; 0 = greedy.")]
TopPOpt = Annotated[float, typer.Option(help="Nucleus sampling: keep the smallest set with this much mass.")]
TopKOpt = Annotated[int, typer.Option(help="Keep only the k most likely tokens; 0 = off.")]
SeedOpt = Annotated[int | None, typer.Option(help="Seed for reproducible sampling.")]


def _sampling_kwargs(max_tokens: int, temperature: float, top_p: float, top_k: int, seed: int | None) -> dict[str, Any]:
    return {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "top_k": top_k, "seed": seed}


def _sampling(**kwargs: Any) -> SamplingParams:
    try:
        return sampling_params_from_fields(kwargs)
    except InvalidParameterError as e:
        raise typer.BadParameter(str(e), param_hint=f"--{e.param.replace('_', '-')}") from None


@contextmanager
def _usage_errors(model_hint: str) -> Iterator[None]:
    """A model that cannot load or a bad engine option is a usage error (exit 2), not a traceback."""
    from vivace.engine.loaders.errors import ModelLoadError

    try:
        yield
    except ModelLoadError as e:
        raise typer.BadParameter(str(e), param_hint=model_hint) from None
    except InvalidParameterError as e:
        raise typer.BadParameter(str(e), param_hint=f"--{e.param.replace('_', '-')}") from None


def _load(model: str | None, device: str, speculative: str | None = None) -> LLM:
    from vivace.engine.llm import LLM

    with _usage_errors("--model"):
        return LLM(model, device=device, speculative=speculative)


UrlOpt = Annotated[
    str | None,
    typer.Option(
        envvar="VIVACE_URL",
        help="A running server (http://HOST:PORT) to stream from instead of loading the model here.",
    ),
]
ServerKeyOpt = Annotated[
    str | None,
    typer.Option("--api-key", envvar="VIVACE_API_KEY", help="The server's key, with --url (prefer the env var)."),
]


def _backend(
    model: str | None, device: str, url: str | None, api_key: str | None, speculative: str | None = None
) -> LocalBackend | RemoteBackend:
    """The running server at `url` when given, else the model loaded here."""
    from vivace.cli_backends import LocalBackend, RemoteBackend

    if url is None:
        return LocalBackend(_load(model, device, speculative))
    if model is not None:
        raise typer.BadParameter("--model and --url both given; a server serves its own model", param_hint="--model")
    if speculative is not None:
        raise typer.BadParameter("--speculative and --url both given; the server decides", param_hint="--speculative")
    from vivace.bench.target import TargetError

    try:
        return RemoteBackend(url, api_key)
    except TargetError as e:
        raise typer.BadParameter(str(e), param_hint="--url") from None


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="The prompt.")],
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    max_tokens: MaxTokensOpt = 256,
    temperature: TemperatureOpt = 0.7,
    top_p: TopPOpt = 0.95,
    top_k: TopKOpt = 0,
    seed: SeedOpt = None,
    chat: Annotated[bool, typer.Option("--chat/--no-chat", help="Wrap the prompt in the chat template.")] = True,
    url: UrlOpt = None,
    api_key: ServerKeyOpt = None,
    speculative: SpeculativeOpt = None,
) -> None:
    """Stream one completion of PROMPT to stdout."""
    sampling = _sampling_kwargs(max_tokens, temperature, top_p, top_k, seed)
    _sampling(**sampling)
    backend = _backend(model, device, url, api_key, speculative)
    try:
        if chat:
            reply = backend.chat([{"role": "user", "content": prompt}], sampling, _write)
        else:
            reply = backend.complete(prompt, sampling, _write)
    finally:
        backend.close()
    sys.stdout.write("\n")
    if reply.error:
        Console(stderr=True).print(f"[red]error:[/red] {escape(reply.error)}", highlight=False)
        raise typer.Exit(1)


def _enable_line_editing() -> None:
    """Arrow keys, editing and Up/Down history for console.input (readline, where Python has it)."""
    try:
        import readline  # noqa: F401  (importing it is what turns line editing on for input())
    except ImportError:  # Windows' Python has no readline: plain input still works
        pass


@app.command()
def chat(
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    max_tokens: MaxTokensOpt = 256,
    temperature: TemperatureOpt = 0.7,
    top_p: TopPOpt = 0.95,
    top_k: TopKOpt = 0,
    seed: SeedOpt = None,
    url: UrlOpt = None,
    api_key: ServerKeyOpt = None,
) -> None:
    """Chat with the model; /help lists the commands. Reads lines from a pipe too."""
    session = ChatSession(_sampling_kwargs(max_tokens, temperature, top_p, top_k, seed), system)
    _sampling(**session.sampling)
    console = Console(highlight=False, emoji=False)
    interactive = sys.stdin.isatty()
    backend = _backend(model, device, url, api_key)
    if interactive:
        _enable_line_editing()
        console.print("[dim]vivace chat — /help lists the commands, /exit or Ctrl-D leaves.[/dim]")
    try:
        _chat_loop(console, backend, session, interactive)
    finally:
        backend.close()


def _chat_loop(
    console: Console, backend: LocalBackend | RemoteBackend, session: ChatSession, interactive: bool
) -> None:
    """Read a line, run it as a command or send it, print the streamed reply; until /exit or end of input."""
    while True:
        try:
            if interactive:
                line = console.input("[bold green]>>> [/bold green]")
            else:
                line = sys.stdin.readline()
                if not line:
                    break
                console.print(f">>> {line.rstrip()}", markup=False)
        except (EOFError, KeyboardInterrupt):
            break
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            try:
                console.print(run_command(session, line), markup=False)
            except ExitChat:
                break
            continue
        session.turns.append({"role": "user", "content": line})
        show = functools.partial(console.print, end="", markup=False, soft_wrap=True)
        try:
            reply = backend.chat(session.messages(), session.sampling, show)
        except KeyboardInterrupt:
            console.print("\n[dim](interrupted)[/dim]")
            session.turns.pop()
            continue
        except ValueError as e:  # e.g. the conversation outgrew the context
            reply = Reply("", None, str(e))
        if reply.error:
            console.print(f"\n[red]error:[/red] {escape(reply.error)}")
            console.print("[dim]/reset starts a new conversation.[/dim]")
            session.turns.pop()
            continue
        console.print()
        if reply.finish_reason == "length":
            console.print(f"[dim](reply cut at max_tokens {session.sampling['max_tokens']}; /set max_tokens N)[/dim]")
        session.turns.append({"role": "assistant", "content": reply.text})


def _request_error(llm: LLM, prompt: str | list[int], params: SamplingParams) -> str | None:
    """The engine's own verdict on a request (too long for the context, a token id out of range) without running it.

    `generate_unordered` rejects the whole batch if one request is invalid; checking each first lets
    that one line get an error and the rest run.
    """
    try:
        llm.engine.validate_request(prompt, params)
    except ValueError as e:
        return str(e)
    return None


@app.command()
def batch(
    input_path: Annotated[
        Path, typer.Argument(metavar="IN.jsonl", exists=True, dir_okay=False, help="Requests, one JSON object a line.")
    ],
    output_path: Annotated[
        Path, typer.Argument(metavar="OUT.jsonl", dir_okay=False, help="Results, appended as requests finish.")
    ],
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    max_tokens: MaxTokensOpt = 256,
    temperature: TemperatureOpt = 0.7,
    top_p: TopPOpt = 0.95,
    top_k: TopKOpt = 0,
    seed: SeedOpt = None,
    speculative: SpeculativeOpt = None,
) -> None:
    """Run every line of IN.jsonl; write each result to OUT.jsonl as it finishes. Reruns resume."""
    from vivace.batch_io import (
        BatchError,
        BatchOutputError,
        ResultWriter,
        error_record,
        prepare_output,
        read_requests,
        result_record,
    )

    defaults = _sampling_kwargs(max_tokens, temperature, top_p, top_k, seed)
    _sampling(**defaults)  # reject bad defaults before reading anything
    err = Console(stderr=True, highlight=False, emoji=False)
    try:
        done = prepare_output(output_path)
    except BatchOutputError as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    todo = [item for item in read_requests(input_path, defaults) if item.index not in done]
    if done:
        err.print(f"resuming: {len(done)} line(s) already in {output_path}, {len(todo)} to go")
    if not todo:
        return
    errors = [item for item in todo if isinstance(item, BatchError)]
    runnable = [item for item in todo if not isinstance(item, BatchError)]
    llm = None
    if runnable:
        with err.status("loading the model"):
            llm = _load(model, device, speculative)
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    )
    with ResultWriter(output_path) as writer, progress:
        task = progress.add_task("batch", total=len(todo))
        for item in errors:
            writer.write(error_record(item.index, item.id, item.error))
            progress.advance(task)
        failed = len(errors)
        prompts: list[str | list[int]] = []
        kept = []
        for item in runnable:
            try:
                prompt = item.prompt if item.messages is None else llm.tokenizer.encode_chat(item.messages)
                error = _request_error(llm, prompt, item.sampling_params)
            except ChatTemplateError as e:  # a template may reject a conversation (roles out of order)
                error = str(e)
            if error is not None:
                writer.write(error_record(item.index, item.id, error))
                progress.advance(task)
                failed += 1
                continue
            prompts.append(prompt)
            kept.append(item)
        results = llm.generate_unordered(prompts, [item.sampling_params for item in kept]) if kept else []
        for i, out in results:
            item, completion = kept[i], out.outputs[0]
            progress.advance(task)
            if out.error or completion.finish_reason == "error":
                writer.write(error_record(item.index, item.id, out.error or "the engine failed on this request"))
                failed += 1
                continue
            writer.write(
                result_record(
                    item.index,
                    item.id,
                    completion.text,
                    completion.finish_reason,
                    len(out.prompt_token_ids),
                    len(completion.token_ids),
                )
            )
    if failed:
        err.print(f"[yellow]{failed} line(s) could not run; see their 'error' field in {output_path}[/yellow]")


@app.command("train-medusa")
def train_medusa(
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", file_okay=False, help="Directory to write the heads to.")],
    model: ModelOpt = None,
    device: DeviceOpt = "cpu",
    prompts: Annotated[int, typer.Option(min=1, help="Prompts of the packaged set the model answers.")] = 96,
    prompts_file: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="Your own prompts instead, one a line.")
    ] = None,
    max_tokens: Annotated[int, typer.Option(min=4, help="Tokens of each greedy answer.")] = 96,
    heads: Annotated[int, typer.Option(min=1, max=8, help="Medusa heads (head k guesses k + 1 tokens ahead).")] = 4,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the distilled positions.")] = 8,
    head_vocab: Annotated[int, typer.Option(min=16, help="Most frequent answer tokens the heads score.")] = 4096,
) -> None:
    """Train Medusa heads by self-distillation (the model's own greedy answers); use them with --speculative medusa:OUT."""
    from vivace.engine.speculative.medusa_prompts import medusa_prompts
    from vivace.engine.speculative.medusa_train import TrainSettings
    from vivace.engine.speculative.medusa_train import train_medusa as train

    if prompts_file is not None:
        texts = [line.strip() for line in prompts_file.read_text().splitlines() if line.strip()]
        if not texts:
            raise typer.BadParameter("the file has no prompts", param_hint="--prompts-file")
    else:
        try:
            texts = medusa_prompts(prompts)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--prompts") from None
    settings = TrainSettings(
        num_prompts=len(texts), max_tokens=max_tokens, num_heads=heads, head_vocab=head_vocab, epochs=epochs
    )
    llm = _load(model, device)
    train(str(out_dir), llm, model or "smollm2", settings, texts, log=lambda line: typer.echo(line, err=True))
    typer.echo(f"wrote {out_dir}; use it with --speculative medusa:{out_dir}")


@app.command()
@with_engine_flags
def serve(
    model: Annotated[
        str | None,
        typer.Argument(help="A .gguf file, an HF-layout directory, or a packaged model: smollm2 (default) or gemma3."),
    ] = None,
    model_option: Annotated[
        str | None, typer.Option("--model", "-m", help="The model, as an option instead of the argument.")
    ] = None,
    served_model_name: Annotated[
        str | None, typer.Option(help="The id clients send as `model` (default: the file or folder name).")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="VIVACE_API_KEY",
            help="Require 'Authorization: Bearer KEY' on every route but /health and the web UI. Prefer the "
            "VIVACE_API_KEY environment variable: a flag's value is readable by every user in the process list.",
        ),
    ] = None,
    max_queue: Annotated[
        int | None, typer.Option(min=0, help="Requests that may wait beyond the running batch; more get 429.")
    ] = None,
    drain_timeout: Annotated[
        float, typer.Option(min=0, help="On SIGTERM, seconds in-flight requests get to finish before they are aborted.")
    ] = 30.0,
    flows: Annotated[
        str | None,
        typer.Option("--flows", help="Folder of flow YAML files served at /v1/flows (default: the packaged examples)."),
    ] = None,
    log_level: Annotated[
        str, typer.Option(help="Log level (uvicorn and request lines): critical, error, warning, info, debug, trace.")
    ] = "info",
    allowed_origins: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-origins",
            help="Web origins (https://host:port) allowed to call the API from a browser (CORS); repeat or "
            "separate with commas.",
        ),
    ] = None,
    max_connections: Annotated[
        int | None,
        typer.Option(
            min=1, help="Open connections at most (default 1000, within the file-descriptor limit); more get 503."
        ),
    ] = None,
    replicas: Annotated[
        int | None,
        typer.Option(min=1, help="Engine replicas behind Ray Serve (starts a local Ray unless --ray-address)."),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(help="An existing Ray cluster (ray://HOST:10001 or auto) to run the replicas on."),
    ] = None,
    router: Annotated[
        str,
        typer.Option(
            help="With Ray: 'affinity' (the replica caching the prompt's prefix, or the session's) or 'pow2' "
            "(Ray's power of two choices)."
        ),
    ] = "affinity",
    engine_options: dict[str, Any] | None = None,
) -> None:
    """Serve the OpenAI-compatible API (chat, completions, embeddings, models) over HTTP."""
    from vivace.flows.model import FlowError
    from vivace.server.listen import ListenError
    from vivace.server.serve import run_server

    if model is not None and model_option is not None and model != model_option:
        raise typer.BadParameter(f"two models given: {model!r} and --model {model_option!r}", param_hint="--model")
    chosen = model if model is not None else model_option
    origins = [o.strip() for value in allowed_origins or [] for o in value.split(",") if o.strip()]
    if replicas is not None or ray_address is not None:
        _serve_on_ray(
            chosen,
            served_model_name,
            host,
            port,
            api_key,
            max_queue,
            drain_timeout,
            flows,
            origins,
            engine_options or {},
            replicas or 1,
            ray_address,
            router,
        )
        return
    try:
        with _usage_errors("MODEL"):
            run_server(
                chosen,
                host=host,
                port=port,
                api_key=api_key,
                max_queue=max_queue,
                served_model_name=served_model_name,
                log_level=log_level,
                drain_timeout=drain_timeout,
                flows_dir=flows,
                engine_options=engine_options or {},
                max_connections=max_connections,
                allowed_origins=origins,
            )
    except FlowError as e:
        raise typer.BadParameter(str(e), param_hint="--flows") from None
    except ListenError as e:  # not a usage error: the command was right, the machine is not ready for it
        typer.echo(f"error: {e}", err=True)  # one line, however narrow the terminal
        raise typer.Exit(1) from None


def _serve_on_ray(
    model: str | None,
    served_model_name: str | None,
    host: str,
    port: int,
    api_key: str | None,
    max_queue: int | None,
    drain_timeout: float,
    flows: str | None,
    origins: list[str],
    engine_options: dict[str, Any],
    replicas: int,
    ray_address: str | None,
    router: str,
) -> None:
    """`vivace serve --replicas/--ray-address`: the same API from N replicas on Ray Serve (imports Ray here only)."""
    from vivace.ray_serve.affinity import ROUTERS

    if router not in ROUTERS:
        raise typer.BadParameter(f"must be one of {', '.join(ROUTERS)}", param_hint="--router")
    try:
        from vivace.ray_serve.launch import run_ray_server
        from vivace.ray_serve.replica import ReplicaSpec
    except ImportError as e:
        typer.echo(f"error: --replicas and --ray-address need Ray Serve: pip install 'vivace[ray]' ({e})", err=True)
        raise typer.Exit(1) from None
    from vivace.server.serve import model_name_for

    spec = ReplicaSpec(
        model, served_model_name or model_name_for(model), engine_options, api_key, max_queue, flows, tuple(origins)
    )
    run_ray_server(spec, replicas, ray_address, router, host, port, drain_timeout)


if __name__ == "__main__":
    app()
