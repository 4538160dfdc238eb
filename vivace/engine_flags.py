"""EngineConfig as command-line options with vLLM's flag names, generated from the dataclass.

Each EngineConfig field becomes one option: its name dashed (`max_num_seqs` -> `--max-num-seqs`),
its type from the field, its default the field's (an option left out is not passed, so EngineConfig
stays the one place defaults live). FLAG_HELP holds the help text and the few fields whose vLLM
flag differs: `--enforce-eager` (cuda_graphs off) and `--kv-cache-memory` (bytes or a fraction,
for kv_cache_memory_bytes / kv_cache_memory_fraction). Adding a field to EngineConfig without an
entry here fails tests/test_engine_flags.py.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import re
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from vivace.engine.config import EngineConfig

# Fields the serve command takes another way (the model is its positional argument and -m/--model).
NOT_FLAGS = frozenset({"model"})

FLAG_HELP: dict[str, str] = {
    "tokenizer": "Tokenizer to use instead of the model's: a .gguf file or an HF directory.",
    "chat_template": "Jinja chat template replacing the tokenizer's: a file path or the template text.",
    "device": "Device to run on: cpu, cuda or cuda:N.",
    "dtype": "Activations and weights: auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16.",
    "quantization": "Linear weights: auto (int8 on CPU in float32), none, int8.",
    "attention_backend": "Kernel set: auto, torch (reference), cpu (C++ ops), triton (CUDA).",
    "cuda_graphs": "Run every step eagerly: no CUDA graphs for decode.",
    "kv_cache_dtype": "KV cache storage: auto, float32, bfloat16, float16, int8 (a scale per token and head).",
    "block_size": "Tokens per KV cache block.",
    "kv_cache_memory_bytes": "KV cache budget: bytes (4GiB, 512MB, 1000000) or a fraction of free memory "
    "(0.5), like vLLM's --gpu-memory-utilization. Default: 0.10 of host memory on CPU, 0.85 of the GPU's.",
    "kv_cache_memory_fraction": "",  # folded into --kv-cache-memory
    "max_num_seqs": "Most sequences running at once.",
    "max_num_batched_tokens": "Token budget per step (prefill chunks + decodes).",
    "max_model_len": "Context length (default: the model's).",
    "enable_prefix_caching": "Reuse the KV cache of shared prompt prefixes.",
    "kv_tier_bytes": "Session KV tier size: evicted prefix-cache blocks are kept there and restored instead of "
    "recomputed; bytes (8GiB, 512MB). Default: 0 (off).",
    "kv_tier_path": "File for the session KV tier (a memory-mapped store on disk, kept across restarts); "
    "default: host memory.",
    "session_ttl": "Seconds a session's (user / session_id field) KV blocks stay pinned after its last turn, e.g. 300. "
    "Default: 0 (off).",
    "disable_hybrid_kv_cache_manager": "Keep the whole context's KV in sliding-window layers too (one block "
    "table for every layer) instead of freeing blocks that fell out of the window.",
    "num_threads": "torch intra-op threads on CPU (default: torch's).",
    "seed": "Engine seed (requests without a seed sample from it).",
    "speculative": "Speculative decoding: ngram, or ngram:k=4,max_n=4,min_n=2 (prompt lookup: up to k tokens "
    "proposed per step from the latest earlier match of the last n tokens); draft:MODEL[,k=4] (a smaller model "
    "with the same tokenizer proposes); medusa:PATH[,k=4,tree=0] (Medusa heads from `vivace train-medusa`; tree=N verifies a draft tree of N nodes instead of a chain). Default: off.",
    "enable_lora": "Give every q/k/v/o/gate/up/down projection LoRA adapter slots (implied by --lora-modules).",
    "max_loras": "Most LoRA adapters loaded at once.",
    "max_lora_rank": "Highest LoRA adapter rank accepted.",
    "lora_modules": "A PEFT LoRA adapter to load at start, as name=path (repeat the flag for more); requests "
    "pick it with model 'name' or 'BASE:name'.",
}

# Fields whose flag is not the dashed field name.
_RENAMED = {"cuda_graphs": "--enforce-eager", "kv_cache_memory_bytes": "--kv-cache-memory"}
_FOLDED = {"kv_cache_memory_fraction"}  # set through another field's flag
_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def flag_name(field: str) -> str:
    """The command-line flag of an EngineConfig field."""
    return _RENAMED.get(field, "--" + field.replace("_", "-"))


def _number_and_unit(value: str, expected: str) -> tuple[float, str]:
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?)?b?\s*", value.lower())
    if match is None:
        raise typer.BadParameter(f"expected {expected}, got {value!r}")
    return float(match[1]), match[2] or ""


def parse_kv_cache_memory(value: str) -> dict[str, Any]:
    """`--kv-cache-memory`: a fraction in (0, 1] of free memory, or bytes with an optional unit (4GiB, 512M)."""
    number, unit = _number_and_unit(value, "bytes (4GiB, 512MB, 1000000) or a fraction (0.5)")
    if not unit and number <= 1.0:
        return {"kv_cache_memory_fraction": number}
    return {"kv_cache_memory_bytes": int(number * _UNITS[unit])}


def parse_bytes(value: str) -> int:
    """A byte count with an optional unit (8GiB, 512MB, 1000000)."""
    number, unit = _number_and_unit(value, "bytes (8GiB, 512MB, 1000000)")
    return int(number * _UNITS[unit])


def parse_lora_modules(values: list[str]) -> dict[str, str]:
    """`--lora-modules`: each value `name=path` (or vLLM's JSON form {"name": ..., "path": ...}) -> {name: path}."""
    modules: dict[str, str] = {}
    for value in values:
        if value.lstrip().startswith("{"):
            try:
                spec = json.loads(value)
                name, path = spec["name"], spec["path"]
            except (ValueError, KeyError, TypeError):
                raise typer.BadParameter(f'expected {{"name": ..., "path": ...}}, got {value!r}') from None
        else:
            name, sep, path = value.partition("=")
            if not sep or not name or not path:
                raise typer.BadParameter(f"expected name=path, got {value!r}")
        if name in modules:
            raise typer.BadParameter(f"LoRA adapter name {name!r} is given twice")
        modules[name] = path
    return modules


def _engine_fields() -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(EngineConfig)
    return [
        (f, hints[f.name])
        for f in dataclasses.fields(EngineConfig)
        if f.name not in NOT_FLAGS and f.name not in _FOLDED
    ]


def _option(field: dataclasses.Field, hint: Any) -> tuple[Any, Any]:
    """(annotation, typer.Option) for one field; every option defaults to None = not given."""
    name = flag_name(field.name)
    help_text = FLAG_HELP[field.name]
    if field.name == "cuda_graphs":
        return bool, typer.Option(name, help=help_text, rich_help_panel="Engine")
    if field.name in ("kv_cache_memory_bytes", "kv_tier_bytes"):
        return str | None, typer.Option(name, help=help_text, rich_help_panel="Engine")
    if field.name == "lora_modules":
        return list[str] | None, typer.Option(name, help=help_text, rich_help_panel="Engine")
    base = next((t for t in typing.get_args(hint) if t is not type(None)), hint)
    default = "the model's" if field.default is None else field.default
    help_text = f"{help_text} (default: {default})" if "default" not in help_text.lower() else help_text
    if base is bool:
        return bool | None, typer.Option(f"{name}/--no-{name[2:]}", help=help_text, rich_help_panel="Engine")
    return base | None, typer.Option(name, help=help_text, rich_help_panel="Engine")


def engine_config_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    """EngineConfig keyword arguments from the generated options' values (those given only)."""
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        if name == "cuda_graphs":
            if value:
                kwargs["cuda_graphs"] = False
        elif name == "kv_cache_memory_bytes":
            if value is not None:
                kwargs.update(parse_kv_cache_memory(value))
        elif name == "kv_tier_bytes":
            if value is not None:
                kwargs["kv_tier_bytes"] = parse_bytes(value)
        elif name == "lora_modules":
            if value:
                kwargs["lora_modules"] = parse_lora_modules(value)
        elif value is not None:
            kwargs[name] = value
    return kwargs


def with_engine_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a typer command every EngineConfig option; it receives them as `engine_options` (EngineConfig kwargs)."""
    signature = inspect.signature(command)
    hints = typing.get_type_hints(command, include_extras=True)
    own = [
        p.replace(annotation=hints[name], kind=inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for name, p in signature.parameters.items()
        if name != "engine_options"
    ]
    generated = []
    annotations = {p.name: p.annotation for p in own}
    for field, hint in _engine_fields():
        annotation, option = _option(field, hint)
        default = False if field.name == "cuda_graphs" else None
        generated.append(
            inspect.Parameter(
                field.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[annotation, option]
            )
        )
        annotations[field.name] = Annotated[annotation, option]
    names = {p.name for p in generated}

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        engine_values = {name: kwargs.pop(name) for name in list(kwargs) if name in names}
        return command(*args, **kwargs, engine_options=engine_config_kwargs(engine_values))

    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[*own, *generated]
    )
    wrapper.__annotations__ = annotations
    del wrapper.__wrapped__  # typer must read the generated signature, not the command's
    return wrapper
