"""A control call to every live replica of a deployment (metrics, drain), as Ray's LLM library does it.

Ray Serve routes a handle call to one replica; reaching each one goes to the replica actors by
their names, through the replica's own request entry point.
"""

from __future__ import annotations

import asyncio
import pickle
import uuid
from typing import Any

import ray
from ray.serve._private.common import REPLICA_ID_FULL_ID_STR_PREFIX, RequestMetadata

SERVE_NAMESPACE = "serve"


def replica_actor_names(app_name: str, deployment: str) -> list[str]:
    """The names of the deployment's live replica actors."""
    prefix = f"{REPLICA_ID_FULL_ID_STR_PREFIX}{app_name}#{deployment}#"
    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == SERVE_NAMESPACE and a["name"].startswith(prefix)
    )


async def broadcast(app_name: str, deployment: str, method: str, timeout: float = 10.0) -> list[Any]:
    """`method()` on every live replica; a replica that fails or does not answer in `timeout` is left out."""
    names = await asyncio.to_thread(replica_actor_names, app_name, deployment)
    calls = []
    for name in names:
        try:
            actor = ray.get_actor(name, namespace=SERVE_NAMESPACE)
        except ValueError:  # died since it was listed
            continue
        request_id = f"vivace-control-{uuid.uuid4().hex}"
        metadata = RequestMetadata(request_id=request_id, internal_request_id=request_id, call_method=method)
        calls.append(asyncio.wait_for(actor.handle_request.remote(pickle.dumps(metadata)), timeout))
    results = await asyncio.gather(*calls, return_exceptions=True)
    return [r for r in results if not isinstance(r, BaseException)]
