"""`vivace serve`: load the engine and run the API with uvicorn."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from vivace.engine.async_engine import AsyncEngine
from vivace.engine.config import EngineConfig
from vivace.engine.engine import LLMEngine
from vivace.engine.loaders.default_model import default_model_path

if TYPE_CHECKING:  # imported where the server starts, so importing this module stays light
    import uvicorn


def model_name_for(model: str | None) -> str:
    """The id clients send as `model`: the file or directory name without .gguf."""
    path = os.path.normpath(model or default_model_path())
    name = os.path.basename(path)
    return name[: -len(".gguf")] if name.endswith(".gguf") else name


def run_server(
    model: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    max_queue: int | None = None,
    served_model_name: str | None = None,
    log_level: str = "info",
    drain_timeout: float = 30.0,
    flows_dir: str | None = None,
    engine_options: dict[str, Any] | None = None,
    max_connections: int | None = None,
    allowed_origins: Sequence[str] = (),
) -> None:
    """Load the model (EngineConfig from `engine_options`) and serve it until SIGINT/SIGTERM, then drain."""
    import uvicorn

    from vivace.flows.loader import examples_dir, load_flows
    from vivace.server.app import create_app
    from vivace.server.drain import DrainingServer
    from vivace.server.security import DropQueryStrings
    from vivace.server.transport import TransportLimits, connection_cap, guarded_protocol

    flows = load_flows(flows_dir or examples_dir())  # before the model loads, so a bad flow file fails fast
    engine = AsyncEngine(LLMEngine(EngineConfig(model=model, **(engine_options or {}))), background=False)
    name = served_model_name or model_name_for(model)
    app = create_app(engine, name, api_key=api_key, max_queue=max_queue, flows=flows, allowed_origins=allowed_origins)
    print(startup_summary(engine.engine, name, host, port), flush=True)
    limits = TransportLimits()
    limits = replace(limits, max_connections=connection_cap(max_connections or limits.max_connections))
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5, http=guarded_protocol(limits)
    )
    logging.getLogger("uvicorn.access").addFilter(DropQueryStrings())  # after Config, which configures logging
    server = DrainingServer(config, app.state.server, drain_timeout)
    serve_on_thread_step_on_main(server, engine)


def startup_summary(engine: LLMEngine, name: str, host: str, port: int) -> str:
    """What `vivace serve` serves, printed once the model is loaded."""
    config = engine.config
    kv_tokens = engine.scheduler.kv.num_blocks * config.block_size
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    rows = [
        ("model", f"{name} ({config.model or default_model_path()})"),
        ("device", config.device),
        (
            "dtype",
            f"{config.resolved_dtype}, weights {config.resolved_quantization}, KV {config.resolved_kv_cache_dtype}",
        ),
        ("KV cache", f"{kv_tokens:,} tokens ({engine.scheduler.kv.num_blocks:,} blocks of {config.block_size})"),
        ("context", f"{engine.max_model_len:,} tokens"),
        ("max seqs", f"{config.max_num_seqs} running, {config.max_num_batched_tokens} tokens per step"),
        ("web UI", f"{url}/"),
        ("API", f"{url}/v1"),
    ]
    return "\n".join(f"vivace serve  {label:<9} {value}" for label, value in rows)


def serve_on_thread_step_on_main(server: uvicorn.Server, engine: AsyncEngine) -> None:
    """Run HTTP on a thread and the engine loop on this (the main) thread until the server exits.

    Why this way round: torch's CPU kernels ran ~40% slower (int8 matmuls most) when stepped from a
    second thread after the main thread had used them (loading the model does), measured with
    bench/serving.py; on the thread that loaded the model they run at full speed. uvicorn installs no
    signal handlers off the main thread, so SIGINT/SIGTERM are routed to it here.
    """

    def on_signal(signum: int, frame: object) -> None:
        if server.should_exit:  # a second signal: stop waiting for the drain
            server.force_exit = True
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    http = threading.Thread(target=server.run, name="vivace-http")

    def stop_engine_after_http() -> None:
        http.join()
        engine.shutdown()

    http.start()
    threading.Thread(target=stop_engine_after_http, name="vivace-http-watch", daemon=True).start()
    try:
        engine.run_loop()
    finally:
        server.should_exit = True
        engine.shutdown()
        http.join(timeout=10)
