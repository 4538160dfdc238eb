"""Topological order and critical path, checked against brute force on random DAGs."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vivace.flows.graph import CycleError, critical_path, topological_order


@st.composite
def dags(draw):
    n = draw(st.integers(1, 7))
    names = [f"s{i}" for i in range(n)]
    deps = {name: {names[j] for j in range(i) if draw(st.booleans())} for i, name in enumerate(names)}
    durations = {name: draw(st.floats(0, 10)) for name in names}
    order = draw(st.permutations(names))  # declaration order need not be topological
    return {name: deps[name] for name in order}, durations


def _paths(deps):
    """Every chain of steps each depending on the previous one (brute force)."""
    for length in range(1, len(deps) + 1):
        for chain in itertools.permutations(deps, length):
            if all(chain[k] in deps[chain[k + 1]] for k in range(length - 1)):
                yield list(chain)


@given(dags())
def test_order_puts_dependencies_first(graph):
    deps, _ = graph
    order = topological_order(deps)
    assert sorted(order) == sorted(deps)
    for name in deps:
        assert all(order.index(d) < order.index(name) for d in deps[name])


@given(dags())
def test_critical_path_is_the_longest_chain(graph):
    deps, durations = graph
    time, path = critical_path(durations, deps)
    best = max(sum(durations[s] for s in chain) for chain in _paths(deps))
    assert time == pytest.approx(best)
    assert sum(durations[s] for s in path) == pytest.approx(time)
    assert all(path[k] in deps[path[k + 1]] for k in range(len(path) - 1))


def test_missing_durations_count_as_zero():
    time, path = critical_path({"a": 2.0}, {"a": set(), "b": {"a"}, "c": set()})
    assert time == 2.0 and path[0] == "a"


def test_cycle_error_lists_the_cycle():
    with pytest.raises(CycleError) as info:
        topological_order({"a": {"b"}, "b": {"a"}})
    assert info.value.cycle in (["a", "b", "a"], ["b", "a", "b"])
