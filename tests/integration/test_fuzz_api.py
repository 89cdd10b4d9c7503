"""Schemathesis against the OpenAPI document, over real HTTP: no input gets a 5xx, and
every response matches what the document says, for a bounded, repeatable set of
generated requests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import schemathesis
from conftest import LiveServer, serve, url_of
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from web.openapi import DOCUMENT

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
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
