"""Schemathesis against the OpenAPI document, over real HTTP: no input gets a 5xx, every
answer matches what the document says and is strict JSON, for a bounded, repeatable set
of generated requests; then the same for bodies carrying the JSON that SPEC §14 refuses
(deep nesting, numbers beyond a double, lone surrogates) or must keep (U+2028, U+2029,
U+0085), spliced into generated ones."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
import schemathesis
from conftest import LiveServer, serve, url_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from web.openapi import DOCUMENT

#: Generated requests by the hundred: left out of `make test-fast`.
pytestmark = pytest.mark.slow


def _refuse(name: str) -> Any:
    raise AssertionError(f"the response holds {name}, which is not JSON")


@schemathesis.check
def strict_json_response(ctx: CheckContext, response: Any, case: Any) -> bool | None:
    """A JSON answer is strict JSON, all of it ASCII (U+2028 and the like escaped)."""
    content_type = (response.headers.get("content-type") or [""])[0]
    if content_type.startswith("application/json"):
        assert response.content.isascii(), "a JSON response with raw non-ASCII characters"
        json.loads(response.content, parse_constant=_refuse)
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    strict_json_response,
]

# The document served at /api/openapi.json is this one (test_openapi.py checks that).
schema = schemathesis.openapi.from_dict(DOCUMENT)


@pytest.fixture
def fuzz_server(
    app_factory: Callable[..., Any], r: redis.Redis, broker: redis.Redis
) -> Iterator[LiveServer]:
    # The idle broker: runs the fuzzer manages to create stay queued.
    with serve(app_factory(broker_url=url_of(broker))) as server:
        yield server


@schema.parametrize()
@settings(max_examples=25, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_5xx_and_every_answer_is_as_documented(
    case: Any, fuzz_server: LiveServer
) -> None:
    checks = CHECKS
    if case.operation.path == "/readyz":
        # 503 is what /readyz is for (there is no worker here); it is still checked
        # against the document like every other answer.
        checks = [c for c in CHECKS if c is not not_a_server_error]
    case.call_and_validate(base_url=fuzz_server.url, checks=checks, timeout=10)


#: JSON values strict parsing refuses, as text (Python cannot even hold most of them).
REFUSED = st.one_of(
    st.integers(65, 100_000).map(lambda n: "[" * n + "]" * n),
    st.integers(65, 5_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(65, 100_000).map(lambda n: "[" * n),  # unterminated as well
    st.sampled_from(["1e400", "-1e400", "1E+309", "-2e308", "1" + "0" * 400, "NaN", "Infinity"]),
    st.integers(0xD800, 0xDFFF).map(lambda c: f'"x\\u{c:04x}"'),
    st.integers(0xDC00, 0xDFFF).map(lambda c: f'"\\ud83d\\ud83d\\u{c:04x}"'),
)
#: Strings with the characters that end lines for some readers but not for JSON.
ODD_TEXT = st.text(st.sampled_from('\u2028\u2029\u0085\r\n\\"a[/]é😀'), max_size=12)
KEPT = st.one_of(
    ODD_TEXT.map(json.dumps),
    ODD_TEXT.map(lambda t: json.dumps(t, ensure_ascii=False)),
    st.sampled_from(
        ["9007199254740993", "-18446744073709551617", "1e-400", "1.7976931348623157e308"]
    ),
)
POST_PATHS = [path for path, item in DOCUMENT["paths"].items() if "post" in item]


def splice(body: Any, value: str, where: str) -> str:
    """A generated body with `value` (JSON text) put in it: at its top level, inside its
    input, or as the whole body."""
    base = body if isinstance(body, dict) else {}
    if where == "whole":
        return value
    if where == "input":
        base = {**base, "input": {}}
    text = json.dumps(base)
    inner = '{"hostile": ' + value + "}"
    if where == "input":
        return text.replace('"input": {}', '"input": ' + inner)
    return text[:-1] + (", " if base else "") + '"hostile": ' + value + "}"


@pytest.mark.parametrize("path", POST_PATHS)
@settings(max_examples=25, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_hostile_json_bodies_get_no_5xx_and_strict_json_answers(
    path: str, fuzz_server: LiveServer, data: st.DataObject
) -> None:
    case = data.draw(schema[path]["POST"].as_strategy(), label="case")
    refused = data.draw(st.booleans(), label="refused")
    value = data.draw(REFUSED if refused else KEPT, label="value")
    where = data.draw(st.sampled_from(["top", "input", "whole"]), label="where")
    response = httpx.post(
        fuzz_server.url + case.formatted_path,
        content=splice(case.body, value, where).encode("utf-8", "surrogatepass"),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    case.validate_response(response, checks=CHECKS)
    if refused and path == "/api/runs":
        assert response.status_code == 400, response.text
