import pytest

from tasks.errors import ReferenceResolutionError
from tasks.references import is_reference, iter_references, lookup, parse_path, resolve


def test_is_reference() -> None:
    assert is_reference({"from": "input.x"})
    assert not is_reference({"from": "input.x", "other": 1})
    assert not is_reference({"from": 3})
    assert not is_reference("input.x")
    assert not is_reference(["from"])


def test_iter_references_finds_nested_ones_in_order() -> None:
    value = {
        "a": {"from": "input.a"},
        "list": [1, {"from": "steps.s.output.0"}, [{"deep": {"from": "input"}}]],
        "literal": {"from": "x", "to": "y"},
    }
    assert list(iter_references(value)) == ["input.a", "steps.s.output.0", "input"]


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("input", ("input",)),
        ("input.a.0", ("input", "a", "0")),
        ("steps.fetch.output", ("steps", "fetch", "output")),
        ("steps.fetch.output.body.x", ("steps", "fetch", "output", "body", "x")),
    ],
)
def test_parse_path_accepts_known_roots(path: str, segments: tuple[str, ...]) -> None:
    assert parse_path(path) == segments


@pytest.mark.parametrize(
    "path", ["inputs.x", "steps.fetch", "steps.fetch.result", "output.x", "steps", ""]
)
def test_parse_path_rejects_bad_roots(path: str) -> None:
    with pytest.raises(ReferenceResolutionError, match="must start with 'input'"):
        parse_path(path)


@pytest.mark.parametrize("path", ["input..x", "input.", "steps..output", "steps.s.output.a..b"])
def test_parse_path_rejects_empty_segments(path: str) -> None:
    with pytest.raises(ReferenceResolutionError, match="empty segment"):
        parse_path(path)


OUTPUTS = {
    "fetch": {"status": 200, "body": {"items": [{"url": "u0"}, {"url": "u1"}], "n": None}},
    "broken": None,
}


def test_resolve_replaces_references_everywhere() -> None:
    value = {
        "who": {"from": "input.name"},
        "all": {"from": "input"},
        "urls": [{"from": "steps.fetch.output.body.items.1.url"}, "literal"],
        "nested": {"status": {"from": "steps.fetch.output.status"}},
        "n": 5,
    }
    assert resolve(value, {"name": "Ada"}, OUTPUTS) == {
        "who": "Ada",
        "all": {"name": "Ada"},
        "urls": ["u1", "literal"],
        "nested": {"status": 200},
        "n": 5,
    }


def test_resolve_returns_copies() -> None:
    outputs = {"s": {"items": [1, 2]}}
    value = {"items": {"from": "steps.s.output.items"}, "lit": [1]}
    resolved = resolve(value, None, outputs)
    resolved["items"].append(3)
    resolved["lit"].append(2)
    assert outputs == {"s": {"items": [1, 2]}}
    assert value["lit"] == [1]


def test_walking_through_none_gives_none() -> None:
    assert lookup("steps.broken.output.body.x.0", {}, OUTPUTS) is None
    assert lookup("steps.fetch.output.body.n.deeper", {}, OUTPUTS) is None
    assert resolve({"x": {"from": "steps.broken.output"}}, {}, OUTPUTS) == {"x": None}


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("steps.fetch.output.body.x", "reference 'steps.fetch.output.body.x': no key 'x'"),
        ("steps.fetch.output.body.items.5", "index 5 out of range"),
        ("steps.fetch.output.body.items.first", "'first' is not a list index"),
        ("steps.fetch.output.body.items.-1", "'-1' is not a list index"),
        ("steps.fetch.output.status.code", "cannot look up 'code' in a number"),
        ("input.name.x", "cannot look up 'x' in a string"),
        ("steps.missing.output", "no output for step 'missing'"),
        ("nowhere.x", "must start with 'input'"),
    ],
)
def test_lookup_failures_name_the_path_and_segment(path: str, message: str) -> None:
    with pytest.raises(ReferenceResolutionError) as info:
        resolve({"v": {"from": path}}, {"name": "Ada"}, OUTPUTS)
    assert message in info.value.message
    assert path in info.value.message
