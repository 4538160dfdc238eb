"""CacheAffinityRouter: Ray Serve's request-router extension point, sending each request to the replica
holding its conversation's KV cache (see affinity.py for the model of the caches and the ranking).

Built like Ray's PrefixCacheAffinityRouter (ray.llm), with two differences: the prefix index lives in
the router itself rather than in a shared actor (one ingress routes everything; no blocking actor
call on the routing path), and a session id (`session_id` / `user`) pins a conversation outright.
"""

from __future__ import annotations

from ray.serve.request_router import PendingRequest, ReplicaID, ReplicaResult, RequestRouter, RunningReplica

from vivace.ray_serve.affinity import ROUTERS, Candidate, PrefixIndex, SessionTable, chunk_hashes, rank
from vivace.ray_serve.forwarding import ForwardedRequest


def router_class_path(router: str) -> str | None:
    """The `request_router_class` for a `--router` choice; None = Ray's default (power of two choices)."""
    if router not in ROUTERS:
        raise ValueError(f"--router must be one of {', '.join(ROUTERS)}, not {router!r}")
    return "vivace.ray_serve.router.CacheAffinityRouter" if router == "affinity" else None


def _forwarded(pending: PendingRequest | None) -> ForwardedRequest | None:
    if pending is None:
        return None
    return next((a for a in pending.args if isinstance(a, ForwardedRequest)), None)


class CacheAffinityRouter(RequestRouter):
    """Longest cached prefix, or the session's replica, unless overloaded; else the least loaded."""

    def initialize_state(self, imbalance: int = 4, max_chunks: int = 65536, max_sessions: int = 100_000) -> None:
        """`imbalance`: how many more queued requests than the least loaded replica the cached one may have."""
        self.imbalance = imbalance
        self.index = PrefixIndex(max_chunks)
        self.sessions = SessionTable(max_sessions)

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        request = _forwarded(pending_request)
        if request is None:  # a control call (metrics, drain): anywhere
            return [candidate_replicas]
        hashes = chunk_hashes(request.prompt)
        queue_lens = await self._queue_lens(candidate_replicas)
        candidates = [
            Candidate(
                r.replica_id,
                queue_lens.get(r.replica_id),
                self.index.matched(r.replica_id, hashes),
                self.index.size(r.replica_id),
            )
            for r in candidate_replicas
        ]
        by_id = {r.replica_id: r for r in candidate_replicas}
        ranks = rank(candidates, self.sessions.get(request.session), self.imbalance)
        return [[by_id[i] for i in ids] for ids in ranks]

    async def _queue_lens(self, replicas: list[RunningReplica]) -> dict[ReplicaID, int]:
        """Each replica's queue length: from Ray's cache where fresh, else probed (as Ray's routers do)."""
        lens: dict[ReplicaID, int] = {}
        unknown = []
        for r in replicas:
            cached = self._replica_queue_len_cache.get(r.replica_id) if self._use_replica_queue_len_cache else None
            if cached is None:
                unknown.append(r)
            else:
                lens[r.replica_id] = cached
        if unknown:
            for r, queue_len in await self._probe_queue_lens(unknown, 0):
                if queue_len is not None:
                    lens[r.replica_id] = queue_len
        return lens

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: ReplicaResult) -> None:
        """The replica now caches this prompt (once it has run it) and holds this session."""
        request = _forwarded(pending_request)
        if request is not None:
            self.index.insert(replica_id, chunk_hashes(request.prompt))
            self.sessions.put(request.session, replica_id)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        """Forget the replicas that left the set (stopped or replaced): their caches left with them."""
        super().update_replicas(replicas)
        live = {r.replica_id for r in replicas}
        for gone in self.index.replicas() - live:
            self.index.drop(gone)
            self.sessions.drop(gone)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        """A dead replica's cache is gone: its prefixes and sessions go elsewhere."""
        super().on_replica_actor_died(replica_id)
        self.index.drop(replica_id)
        self.sessions.drop(replica_id)
