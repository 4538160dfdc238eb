"""A small simulation of the Ray Serve router over N vivace replicas: how cache affinity and Ray's
power of two choices compare at 8 and 64 replicas, from single-replica costs.

Model (one event per engine step of each replica):
- conversations arrive as a Poisson process; each has TURNS turns, a turn's prompt being the whole
  history (FIRST tokens, then +USER per turn, +REPLY per reply); the next turn is sent THINK seconds
  (exponential) after the reply;
- a replica is a continuous-batching engine: each step takes `step_s + token_s x tokens` for up to
  BUDGET tokens (prefill chunks, FCFS, plus one token per decoding request); the defaults are one
  single-thread CPU replica of the packaged model, from the README's serving result (462 output tok/s
  with 32 streams on 2 threads: ~69 ms per 32-token decode step; one thread taken as half as fast);
- a replica's prefix cache holds the last KV_TOKENS tokens of the conversations it served (LRU); a
  prompt is computed only past the part its replica still caches;
- the router sees every replica's queue (requests waiting + running), as Ray's queue-length probes
  do: `pow2` sends to the shorter queue of two random replicas; `affinity` to the session's replica
  unless its queue is more than IMBALANCE longer than the shortest, else to the least loaded;
- the ingress adds `route_s` per request and `relay_s` per streamed token (a single ingress process:
  past 1 / its busy fraction it becomes the limit, reported as ingress utilisation).

    python bench/ray_router_sim.py                  # 1, 8 and 64 replicas, load 0.7 of capacity
    python bench/ray_router_sim.py --replicas 8 64 --load 0.9
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class Params:
    turns: int = 6
    first: int = 120  # tokens of a conversation's first message
    user: int = 30  # tokens of each later user message
    reply: int = 16  # tokens generated per turn
    think_s: float = 2.0  # mean pause between a reply and the next turn
    step_s: float = 0.020  # fixed cost of one engine step
    token_s: float = 0.0020  # cost per token in a step (prefill rows and decode rows alike)
    budget: int = 512  # tokens per step
    kv_tokens: int = 6000  # prefix cache per replica, tokens
    imbalance: int = 4
    route_s: float = 0.0008  # ingress + router per request
    relay_s: float = 0.0002  # ingress per streamed token


@dataclass
class Request:
    conv: int
    turn: int
    prompt: int  # prompt tokens
    arrived: float
    todo: int = 0  # prompt tokens still to compute
    out: int = 0
    first_token: float | None = None


@dataclass
class Replica:
    waiting: list[Request] = field(default_factory=list)
    running: list[Request] = field(default_factory=list)
    cache: OrderedDict = field(default_factory=OrderedDict)  # conv -> cached tokens, LRU
    cached_total: int = 0
    busy: bool = False

    @property
    def queue(self) -> int:
        return len(self.waiting) + len(self.running)

    def cached(self, conv: int) -> int:
        return self.cache.get(conv, 0)

    def remember(self, conv: int, tokens: int, capacity: int) -> None:
        self.cached_total += tokens - self.cache.pop(conv, 0)
        self.cache[conv] = tokens
        while self.cached_total > capacity and self.cache:
            _, dropped = self.cache.popitem(last=False)
            self.cached_total -= dropped


def simulate(n: int, router: str, load: float, p: Params, conversations: int, seed: int = 0) -> dict[str, float]:
    """Run the workload at `load` x the deployment's capacity; TTFTs, hit ratio, throughput."""
    rng = random.Random(seed)
    # Capacity: a replica's conversations per second when every prompt computes only its new tokens.
    new_tokens = p.first + (p.turns - 1) * (p.user + p.reply)
    per_conv_s = new_tokens * p.token_s + p.turns * p.reply * (p.token_s + p.step_s / 8)  # decode rows share steps
    rate = load * n / per_conv_s
    replicas = [Replica() for _ in range(n)]
    session: dict[int, int] = {}
    events: list[tuple[float, int, str, object]] = []
    seq = 0

    def push(t: float, kind: str, item: object) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, item))

    t = 0.0
    for c in range(conversations):
        t += rng.expovariate(rate)  # rate: conversations per second
        push(t, "turn", Request(c, 0, p.first, t))
    ttfts: list[float] = []
    hits = queries = 0
    ingress_busy = 0.0
    finished_at = 0.0

    def route(req: Request) -> int:
        if router == "pow2":
            a, b = rng.sample(range(n), 2) if n > 1 else (0, 0)
            return a if replicas[a].queue <= replicas[b].queue else b
        shortest = min(r.queue for r in replicas)
        home = session.get(req.conv)
        if home is not None and replicas[home].queue - shortest <= p.imbalance:
            return home
        least = [i for i, r in enumerate(replicas) if r.queue == shortest]
        return rng.choice(least)

    while events:
        now, _, kind, item = heapq.heappop(events)
        if kind == "turn":
            req = item
            i = route(req)
            session[req.conv] = i
            r = replicas[i]
            cached = min(r.cached(req.conv), req.prompt - 1)
            hits += cached
            queries += req.prompt
            req.todo = req.prompt - cached
            ingress_busy += p.route_s + p.reply * p.relay_s
            r.waiting.append(req)
            if not r.busy:
                r.busy = True
                push(now, "step", i)
        else:  # one engine step of replica `item`
            i = item
            r = replicas[i]
            tokens = len(r.running)
            room = p.budget - tokens
            for req in list(r.waiting):
                if room <= 0:
                    break
                chunk = min(room, req.todo)
                req.todo -= chunk
                room -= chunk
                tokens += chunk
                if req.todo == 0:
                    r.waiting.remove(req)
                    r.running.append(req)
                    req.out = -1  # its first token comes with this step
            if tokens == 0:
                r.busy = False
                continue
            end = now + p.step_s + p.token_s * tokens
            for req in list(r.running):
                req.out += 1
                if req.out == 0:
                    req.first_token = end
                    ttfts.append(end - req.arrived + p.route_s)
                if req.out >= p.reply:
                    r.running.remove(req)
                    r.remember(req.conv, req.prompt + p.reply, p.kv_tokens)
                    finished_at = max(finished_at, end)
                    if req.turn + 1 < p.turns:
                        nxt = Request(req.conv, req.turn + 1, req.prompt + p.reply + p.user, 0.0)
                        nxt.arrived = end + rng.expovariate(1 / p.think_s)
                        push(nxt.arrived, "turn", nxt)
            push(end, "step", i)
    requests = conversations * p.turns
    return {
        "hit": hits / queries,
        "p50": statistics.median(ttfts),
        "p99": sorted(ttfts)[int(0.99 * (len(ttfts) - 1))],
        "req_s": requests / finished_at,
        "ingress": ingress_busy / finished_at,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--load", type=float, default=0.7, help="offered load as a fraction of capacity")
    parser.add_argument("--conversations-per-replica", type=int, default=200)
    args = parser.parse_args()
    p = Params()
    print(f"load {args.load} of capacity, {p.turns} turns, prefix cache {p.kv_tokens} tokens per replica\n")
    print("| replicas | router | hit ratio | TTFT p50 (s) | TTFT p99 (s) | requests/s | per replica | ingress busy |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.replicas:
        for router in ("pow2", "affinity") if n > 1 else ("affinity",):
            r = simulate(n, router, args.load, p, args.conversations_per_replica * n)
            print(
                f"| {n} | {router} | {r['hit']:.3f} | {r['p50']:.3f} | {r['p99']:.3f} | {r['req_s']:.1f} "
                f"| {r['req_s'] / n:.2f} | {r['ingress']:.0%} |"
            )


if __name__ == "__main__":
    main()
