"""Dependency-graph helpers over step names: a topological order and the critical path."""

from __future__ import annotations

from collections.abc import Mapping, Set


class CycleError(ValueError):
    """The graph has a cycle; `cycle` lists it, first name repeated at the end."""

    def __init__(self, cycle: list[str]) -> None:
        super().__init__(" -> ".join(cycle))
        self.cycle = cycle


def topological_order(deps: Mapping[str, Set[str]]) -> list[str]:
    """The names with each after all of its dependencies (ties in declaration order)."""
    done: list[str] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = placed

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise CycleError(path[path.index(name) :] + [name])
        state[name] = 1
        for dep in sorted(deps[name]):
            visit(dep, path + [name])
        state[name] = 2
        done.append(name)

    for name in deps:
        visit(name, [])
    return done


def critical_path(durations: Mapping[str, float], deps: Mapping[str, Set[str]]) -> tuple[float, list[str]]:
    """The longest chain of dependent steps by summed duration, and that chain (first step first).

    This is the wall time an executor with unlimited parallelism (and steps that do not slow each
    other down) would need; steps missing from `durations` count as 0.
    """
    best: dict[str, tuple[float, list[str]]] = {}
    for name in topological_order(deps):
        before = max((best[d] for d in deps[name]), key=lambda b: b[0], default=(0.0, []))
        best[name] = (before[0] + durations.get(name, 0.0), before[1] + [name])
    return max(best.values(), key=lambda b: b[0], default=(0.0, []))
