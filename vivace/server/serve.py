"""`vivace serve`: load the engine and run the API with uvicorn."""

from __future__ import annotations

import copy
import gc
import logging
import os
import signal
import socket
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import uvicorn

from vivace.engine.async_engine import AsyncEngine
from vivace.engine.config import EngineConfig
from vivace.engine.engine import LLMEngine
from vivace.engine.loaders.default_model import default_model_path
from vivace.server.banner import startup_banner
from vivace.server.drain import DrainingServer
from vivace.server.listen import bind_listener
from vivace.server.request_log import QuietAccessLog
from vivace.server.state import ServerState


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
    from vivace.server.security import DropQueryStrings
    from vivace.server.transport import TransportLimits, connection_cap, guarded_protocol

    listener = bind_listener(host, port)  # before anything slow: a taken port fails now, not after loading
    try:
        flows = load_flows(flows_dir or examples_dir())  # before the model loads, so a bad flow file fails fast
        engine = AsyncEngine(LLMEngine(EngineConfig(model=model, **(engine_options or {}))), background=False)
    except BaseException:
        listener.close()
        raise
    name = served_model_name or model_name_for(model)
    app = create_app(engine, name, api_key=api_key, max_queue=max_queue, flows=flows, allowed_origins=allowed_origins)
    limits = TransportLimits()
    limits = replace(limits, max_connections=connection_cap(max_connections or limits.max_connections))
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=log_config(log_level),
        timeout_graceful_shutdown=5,
        http=guarded_protocol(limits),
    )
    access = logging.getLogger("uvicorn.access")  # filters after Config, which configures logging
    access.addFilter(DropQueryStrings())
    access.addFilter(QuietAccessLog())
    banner = startup_banner(engine.engine, name, host, port)
    server = AnnouncingServer(config, app.state.server, drain_timeout, banner)
    # Everything built so far (weights' wrappers, tokenizer, app) lives as long as the server: moved out of
    # the collector's generations, so the oldest generation's collections stop walking it while serving.
    gc.collect()
    gc.freeze()
    serve_on_thread_step_on_main(server, engine, listener)


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging setup with vivace's loggers (request lines, drain, ignored fields) on its handler."""
    import uvicorn.config

    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["loggers"]["vivace"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


class AnnouncingServer(DrainingServer):
    """The draining server that prints the banner once it is listening: the banner means "ready"."""

    def __init__(self, config: uvicorn.Config, state: ServerState, drain_timeout: float, banner: str) -> None:
        super().__init__(config, state, drain_timeout)
        self.banner = banner

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(self.banner, flush=True)


def serve_on_thread_step_on_main(server: uvicorn.Server, engine: AsyncEngine, listener: socket.socket) -> None:
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
    http = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="vivace-http")

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
