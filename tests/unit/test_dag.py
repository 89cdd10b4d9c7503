import pytest

from tasks.dag import (
    TransitiveNeeds,
    ancestors,
    dependants,
    find_cycle,
    roots,
    topological_order,
)

DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


def test_find_cycle_none_for_a_dag() -> None:
    assert find_cycle(DIAMOND) is None


def test_find_cycle_reports_the_path() -> None:
    assert find_cycle({"a": ["b"], "b": ["a"]}) == ["a", "b", "a"]


def test_find_cycle_finds_a_cycle_away_from_the_start() -> None:
    needs = {"root": [], "x": ["root", "z"], "y": ["x"], "z": ["y"]}
    assert find_cycle(needs) == ["x", "z", "y", "x"]


def test_find_cycle_self_loop() -> None:
    assert find_cycle({"a": ["a"]}) == ["a", "a"]


def test_unknown_needs_are_ignored() -> None:
    needs = {"a": ["ghost"], "b": ["a", "ghost"]}
    assert find_cycle(needs) is None
    assert roots(needs) == ["a"]
    assert topological_order(needs) == ["a", "b"]


def test_dependants_in_definition_order() -> None:
    assert dependants(DIAMOND) == {"a": ("b", "c"), "b": ("d",), "c": ("d",), "d": ()}


def test_dependants_counts_a_repeated_need_once() -> None:
    assert dependants({"a": [], "b": ["a", "a"]}) == {"a": ("b",), "b": ()}


def test_roots() -> None:
    assert roots({"x": [], "y": ["x"], "z": []}) == ["x", "z"]


def test_topological_order_is_stable() -> None:
    needs = {"late": ["slow"], "slow": [], "fast": [], "after_fast": ["fast"]}
    assert topological_order(needs) == ["slow", "late", "fast", "after_fast"]


def test_topological_order_rejects_a_cycle() -> None:
    with pytest.raises(ValueError, match="a -> b -> a"):
        topological_order({"a": ["b"], "b": ["a"]})


def test_ancestors() -> None:
    assert ancestors(DIAMOND) == {
        "a": frozenset(),
        "b": frozenset({"a"}),
        "c": frozenset({"a"}),
        "d": frozenset({"a", "b", "c"}),
    }


def test_transitive_needs() -> None:
    transitive = TransitiveNeeds(DIAMOND)
    assert transitive.has("d", "a")
    assert not transitive.has("b", "c")
    assert not transitive.has("a", "a")


def test_long_chain_needs_no_recursion() -> None:
    names = [f"s{i}" for i in range(10_000)]
    needs = {name: [names[i - 1]] if i else [] for i, name in enumerate(names)}
    assert find_cycle(needs) is None
    assert topological_order(needs) == names
    assert TransitiveNeeds(needs).has(names[-1], names[0])
    needs["s0"] = [names[-1]]
    cycle = find_cycle(needs)
    assert cycle is not None
    assert cycle[0] == cycle[-1]
    assert len(cycle) == 10_001
