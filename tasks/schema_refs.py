"""Whether the references of a JSON Schema can be followed, checked once, at load.

jsonschema follows `$ref` and `$dynamicRef` only when a value reaches them: one that
names nothing (`#/$defs/missing`, a URL that is never fetched), names something that is
no schema (`#/properties/a/type`), or leads back to itself without looking any deeper
into the value (`{"$ref": "#/properties/x"}` at `properties.x`) would fail every run's
input check with an exception, or recurse until Python gives up. A scenario whose
`input_schema` does any of that is left out at load, with the reference named.

Recursion through the value (a tree whose `items` refer to the tree) is fine: each turn
looks one level deeper, so the value's own depth bounds it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from jsonschema_specifications import REGISTRY
from referencing import Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

if TYPE_CHECKING:
    from referencing._core import Resolver  # documented, not re-exported

#: Keywords that apply their subschemas to the same value (not to a part of it): a
#: loop through these and the references never ends.
_IN_PLACE_LISTS = ("allOf", "anyOf", "oneOf")
_IN_PLACE_ONE = ("not", "if", "then", "else")
_REFERENCES = ("$ref", "$dynamicRef")


class BadReference(ValueError):
    """A reference of a schema that cannot be followed; the message says which and why."""


def check_references(schema: Any) -> None:
    """Raise BadReference if a reference of `schema` (Draft 2020-12) names nothing,
    names no schema, or loops back to itself without descending into the value."""
    resource = DRAFT202012.create_resource(schema)
    resolver = REGISTRY.resolver_with_root(resource)
    for sub_resolver, sub in _every_subschema(resolver, resource):
        for keyword, ref in _references(sub.contents):
            _follow(sub_resolver, keyword, ref)
    _no_loops(resolver, schema, [], set())


def _every_subschema(
    resolver: Resolver[Any], resource: Resource[Any]
) -> Iterator[tuple[Resolver[Any], Resource[Any]]]:
    yield resolver, resource
    for sub in resource.subresources():
        yield from _every_subschema(resolver.in_subresource(sub), sub)


def _references(contents: Any) -> list[tuple[str, str]]:
    if not isinstance(contents, dict):
        return []
    return [(k, contents[k]) for k in _REFERENCES if isinstance(contents.get(k), str)]


def _follow(resolver: Resolver[Any], keyword: str, ref: str) -> tuple[Resolver[Any], Any]:
    try:
        resolved = resolver.lookup(ref)
    except Unresolvable:
        raise BadReference(f"{keyword} {ref!r} cannot be resolved") from None
    if not isinstance(resolved.contents, dict | bool):
        raise BadReference(f"{keyword} {ref!r} names no schema")
    return resolved.resolver, resolved.contents


def _in_place(
    resolver: Resolver[Any], schema: Any
) -> Iterator[tuple[Resolver[Any], Any, str | None]]:
    """The schemas `schema` applies to the very value it is given, each with the
    reference that leads there (None for a subschema written in place)."""
    if not isinstance(schema, dict):
        return
    here = resolver.in_subresource(DRAFT202012.create_resource(schema))
    for keyword, ref in _references(schema):
        yield (*_follow(here, keyword, ref), f"{keyword} {ref!r}")
    for keyword in _IN_PLACE_LISTS:
        for sub in schema.get(keyword) or ():
            yield here, sub, None
    for keyword in _IN_PLACE_ONE:
        if keyword in schema:
            yield here, schema[keyword], None
    for sub in (schema.get("dependentSchemas") or {}).values():
        yield here, sub, None


def _no_loops(
    resolver: Resolver[Any], schema: Any, path: list[int], done: set[int], via: str | None = None
) -> None:
    """Depth first over the in-place graph from every subschema: a schema met again on
    the path applies itself to the same value forever. (The schema is a tree, so only
    a reference, `via`, can close such a loop.)"""
    if not isinstance(schema, dict) or id(schema) in done:
        return
    if id(schema) in path:
        raise BadReference(f"{via or 'a reference'} leads back to itself on the same value")
    path.append(id(schema))
    for sub_resolver, sub, ref in _in_place(resolver, schema):
        _no_loops(sub_resolver, sub, path, done, ref)
    path.pop()
    done.add(id(schema))
    # And from the subschemas that look deeper (properties, items...), each a new start.
    for sub in DRAFT202012.create_resource(schema).subresources():
        _no_loops(resolver.in_subresource(sub), sub.contents, [], done)
