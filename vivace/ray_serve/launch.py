"""`vivace serve --replicas N / --ray-address ADDR`: the Ray Serve application (an ingress and N engine
replicas), deployed on a local Ray instance or an existing cluster, drained on SIGINT/SIGTERM."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import ray
from ray import serve
from ray.serve.config import RequestRouterConfig

from vivace.ray_serve.ingress import ENGINE_DEPLOYMENT, Ingress
from vivace.ray_serve.replica import EngineReplica, ReplicaSpec
from vivace.ray_serve.router import router_class_path

APP_NAME = "vivace"


def build_app(spec: ReplicaSpec, replicas: int, router: str = "affinity", app_name: str = APP_NAME) -> Any:
    """The Ray Serve application: an ingress over `replicas` engine replicas routed by `router`."""
    options = spec.engine_options
    gpus = 1 if str(options.get("device", "cpu")).startswith("cuda") else 0  # one replica per device
    cpus = options.get("num_threads") or 1
    max_num_seqs = options.get("max_num_seqs") or 64
    # Ray's queue length per replica is the router's load signal; beyond it requests wait in Ray.
    max_ongoing = max_num_seqs + (spec.max_queue if spec.max_queue is not None else max_num_seqs)
    router_path = router_class_path(router)
    router_config = RequestRouterConfig(request_router_class=router_path) if router_path else RequestRouterConfig()
    engine = serve.deployment(EngineReplica, name=ENGINE_DEPLOYMENT).options(
        num_replicas=replicas,
        ray_actor_options={"num_cpus": cpus, "num_gpus": gpus},
        max_ongoing_requests=max_ongoing,
        request_router_config=router_config,
        health_check_period_s=2,
        graceful_shutdown_timeout_s=5,  # the drain happens before (Ingress.drain); this is the backstop
    )
    ingress = serve.deployment(Ingress, name="Ingress").options(
        num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=100_000
    )
    return ingress.bind(engine.bind(spec), app_name, spec.api_key, spec.allowed_origins)


def run_ray_server(
    spec: ReplicaSpec,
    replicas: int,
    ray_address: str | None,
    router: str,
    host: str,
    port: int,
    drain_timeout: float,
) -> None:
    """Deploy on Ray (a local instance unless `ray_address`) and serve until SIGINT/SIGTERM, then drain."""
    if ray_address:
        ray.init(address=ray_address)
    else:
        cpus = (spec.engine_options.get("num_threads") or 1) * replicas
        ray.init(num_cpus=max(os.cpu_count() or 1, cpus))
    try:
        serve.start(http_options={"host": host, "port": port})
        handle = serve.run(build_app(spec, replicas, router), name=APP_NAME, route_prefix="/")
        print(
            f"vivace on Ray Serve: {spec.model_name}, {replicas} replica(s), router {router}\n"
            f"  API: http://{host}:{port}/v1  metrics: http://{host}:{port}/metrics",
            flush=True,
        )
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: stop.set())
        stop.wait()
        aborted = handle.drain.remote(drain_timeout).result(timeout_s=drain_timeout + 30)
        if aborted:
            print(f"aborted {aborted} request(s) still running at the drain deadline", flush=True)
        serve.shutdown()
    finally:
        ray.shutdown()
