"""A local Ray instance (2 CPUs, a small object store) serving the packaged model from two engine
replicas behind the vivace ingress, started once for the Ray Serve tests and torn down after them."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import SERVED_MAX_MODEL_LEN, TEST_KV_BYTES
from tests.live_server import free_port

MODEL = "smollm2-ray"
REPLICAS = 2


@dataclass
class RayServed:
    base_url: str
    app_name: str


def replica_names(app_name: str) -> list[str]:
    """The live engine replicas' actor names."""
    from vivace.ray_serve.broadcast import replica_actor_names
    from vivace.ray_serve.ingress import ENGINE_DEPLOYMENT

    return replica_actor_names(app_name, ENGINE_DEPLOYMENT)


def wait_for(condition, timeout: float, what: str) -> None:  # noqa: ANN001
    """Poll `condition()` until true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def ray_served() -> Iterator[RayServed]:
    """Ray up (bounded: 2 CPUs, 100 MB object store, no dashboard), the app deployed, then all torn down."""
    import ray
    from ray import serve

    from vivace.ray_serve.launch import APP_NAME, build_app
    from vivace.ray_serve.replica import ReplicaSpec

    # Ray's own memory monitor kills workers when the node (not Ray) passes 95% of its memory: on a
    # shared machine that is other processes' doing, and it would kill the Serve controller mid-test.
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    ray.init(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False, log_to_driver=False)
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        options = {
            "quantization": "none",  # as the single-process tests' engine, so greedy texts compare
            "kv_cache_memory_bytes": TEST_KV_BYTES,
            "max_model_len": SERVED_MAX_MODEL_LEN,
            "num_threads": 1,
            "max_num_seqs": 8,
        }
        spec = ReplicaSpec(None, MODEL, options)
        serve.run(build_app(spec, REPLICAS, "affinity"), name=APP_NAME, route_prefix="/")
        yield RayServed(f"http://127.0.0.1:{port}", APP_NAME)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
