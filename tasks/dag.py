"""Graph helpers over a scenario's `needs`: cycles, order, ancestors and dependants.

Each function takes the graph as a mapping from every step to the steps it needs, in
definition order; that order is what keeps the results stable from one call to the next.
Names in a needs list that are not keys of the mapping are ignored: reporting them is the
scenario check's job, and ignoring them lets these helpers run on a graph that is still
being validated.

Nothing here recurses, so a scenario of 10 000 chained steps cannot hit Python's
recursion limit.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

Needs = Mapping[str, Sequence[str]]

_ON_PATH = 1
_DONE = 2


def _known(needs: Needs, step: str) -> list[str]:
    """The step's needs that are steps of the graph, each once, in listed order."""
    return [n for n in dict.fromkeys(needs[step]) if n in needs]


def find_cycle(needs: Needs) -> list[str] | None:
    """Return one cycle as a path that starts and ends on the same step, or None.

    `["a", "b", "a"]` reads "a needs b, which needs a". A step that needs itself is the
    cycle `["a", "a"]`.
    """
    state: dict[str, int] = {}
    for start in needs:
        if start in state:
            continue
        path = [start]
        pending = [iter(_known(needs, start))]
        state[start] = _ON_PATH
        while path:
            for nxt in pending[-1]:
                seen = state.get(nxt)
                if seen == _ON_PATH:
                    return [*path[path.index(nxt) :], nxt]
                if seen is None:
                    state[nxt] = _ON_PATH
                    path.append(nxt)
                    pending.append(iter(_known(needs, nxt)))
                    break
            else:
                state[path.pop()] = _DONE
                pending.pop()
    return None


def dependants(needs: Needs) -> dict[str, tuple[str, ...]]:
    """Reverse the edges: for every step, the steps that need it, in definition order."""
    reverse: dict[str, list[str]] = {step: [] for step in needs}
    for step in needs:
        for need in _known(needs, step):
            reverse[need].append(step)
    return {step: tuple(users) for step, users in reverse.items()}


def roots(needs: Needs) -> list[str]:
    """The steps that need nothing, in definition order: where a run starts."""
    return [step for step in needs if not _known(needs, step)]


def topological_order(needs: Needs) -> list[str]:
    """Every step after all it needs; among steps ready together, definition order wins.

    Raises ValueError when the needs form a cycle.
    """
    index = {step: i for i, step in enumerate(needs)}
    names = list(needs)
    waiting = {step: len(_known(needs, step)) for step in needs}
    reverse = dependants(needs)
    ready = [index[step] for step, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        step = names[heapq.heappop(ready)]
        order.append(step)
        for user in reverse[step]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, index[user])
    if len(order) < len(names):
        cycle = find_cycle(needs) or []
        raise ValueError(f"needs form a cycle: {' -> '.join(cycle)}")
    return order


class TransitiveNeeds:
    """Answers "does step a (transitively) need step b?" for a whole graph.

    Ancestor sets are kept as integer bitsets, one bit per step: a chain of 10 000 steps
    would otherwise hold some 50 million set entries, while as bitsets it is a few
    megabytes and one OR per edge. Raises ValueError when the needs form a cycle.
    """

    def __init__(self, needs: Needs) -> None:
        self._names = list(needs)
        self._index = {step: i for i, step in enumerate(self._names)}
        self._bits: dict[str, int] = {}
        for step in topological_order(needs):
            bits = 0
            for need in _known(needs, step):
                bits |= self._bits[need] | (1 << self._index[need])
            self._bits[step] = bits

    def has(self, step: str, other: str) -> bool:
        """True when `step` waits, directly or through others, for `other`."""
        return bool(self._bits[step] >> self._index[other] & 1)

    def of(self, step: str) -> frozenset[str]:
        """Every step that `step` waits for, directly or through others."""
        bits = self._bits[step]
        found = []
        while bits:
            lowest = bits & -bits
            found.append(self._names[lowest.bit_length() - 1])
            bits ^= lowest
        return frozenset(found)


def ancestors(needs: Needs) -> dict[str, frozenset[str]]:
    """For every step, all the steps it needs directly or transitively.

    Raises ValueError when the needs form a cycle.
    """
    transitive = TransitiveNeeds(needs)
    return {step: transitive.of(step) for step in needs}
