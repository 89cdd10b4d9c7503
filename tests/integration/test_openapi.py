"""`GET /api/openapi.json` describes the API as it behaves (SPEC §6).

The document is checked as OpenAPI 3.1 (its schemas against the JSON Schema 2020-12
metaschema: openapi-spec-validator is not a dependency), against the app's own URL
rules, and against real responses, each validated with the schema documented for its
path, method and status.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import websocket
from clients import ws_connection
from conftest import WorkerProcess, events_until_finished, url_of, wait_for
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing import Registry
from referencing.jsonschema import DRAFT202012

DOC_URI = "urn:stepstream:openapi"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
TERMINAL = ("succeeded", "failed", "cancelled")

#: SPEC §6: each operation and the statuses it may answer (401 comes with the token).
SPEC_OPERATIONS = [
    pytest.param(
        "post",
        "/api/runs",
        {"202", "200", "400", "404", "409", "413", "422", "503"},
        id="create-run",
    ),
    pytest.param("get", "/api/runs", {"200", "400"}, id="list-runs"),
    pytest.param("get", "/api/runs/{run_id}", {"200", "404"}, id="snapshot"),
    pytest.param(
        "post",
        "/api/runs/{run_id}/cancel",
        {"202", "404", "409"},
        id="cancel",
    ),
    pytest.param("get", "/api/runs/{run_id}/events", {"200", "400", "404"}, id="events"),
    pytest.param("get", "/api/runs/{run_id}/ws", {"400", "404"}, id="ws"),
    pytest.param("get", "/api/scenarios", {"200"}, id="scenarios"),
    pytest.param("get", "/api/scenarios/{scenario_id}", {"200", "404"}, id="scenario"),
    pytest.param("get", "/api/tools", {"200"}, id="tools"),
    pytest.param(
        "get",
        "/api/workers",
        {"200"},
        id="workers",
    ),
    pytest.param("get", "/api/openapi.json", {"200"}, id="openapi"),
    pytest.param("get", "/healthz", {"200"}, id="healthz"),
    pytest.param("get", "/readyz", {"200", "503"}, id="readyz"),
    pytest.param("get", "/metrics", {"200"}, id="metrics"),
]


@pytest.fixture
def doc(client: Any) -> dict[str, Any]:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body: dict[str, Any] = response.get_json()
    return body


@pytest.fixture
def quiet_client(app_factory: Callable[..., Any], r: redis.Redis, broker: redis.Redis) -> Any:
    return app_factory(broker_url=url_of(broker)).test_client()


def pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def check_response(doc: dict[str, Any], method: str, path: str, response: Any) -> None:
    """A Flask test response is documented for its status and matches its schema."""
    body = response.get_json() if response.mimetype == "application/json" else None
    check_body(doc, method, path, response.status_code, response.mimetype, body)


def check_body(
    doc: dict[str, Any], method: str, path: str, status: int, mimetype: str, body: Any
) -> None:
    """`status` is documented for the operation and `body` matches the documented schema."""
    operation = doc["paths"][path][method]
    where = f"{method.upper()} {path} -> {status}"
    assert str(status) in operation["responses"], f"{where} undocumented"
    content = operation["responses"][str(status)].get("content", {})
    assert mimetype in content, f"{where}: {mimetype} undocumented"
    if mimetype != "application/json":
        return
    schema_at = pointer(
        "paths", path, method, "responses", str(status), "content", mimetype, "schema"
    )
    registry: Registry[Any] = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(doc))
    validator = Draft202012Validator(
        {"$ref": f"{DOC_URI}#{schema_at}"},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(body)]
    assert not errors, (where, errors, body)


def iter_schemas(node: Any, where: str = "$") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every `schema` object in the paths: parameters, request bodies, responses."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" and isinstance(value, dict):
                yield f"{where}.schema", value
            else:
                yield from iter_schemas(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from iter_schemas(value, f"{where}[{i}]")


def iter_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from iter_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from iter_refs(value)


def openapi_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path: `<run_id>` and `<path:x>` become `{...}`."""
    return re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule)


# -- the document ----------------------------------------------------------------------------


def test_document_is_openapi_3_1(doc: dict[str, Any]) -> None:
    assert re.fullmatch(r"3\.1\.\d+", doc["openapi"])
    assert isinstance(doc["info"]["title"], str) and isinstance(doc["info"]["version"], str)
    assert isinstance(doc["paths"], dict) and doc["paths"]
    for path, item in doc["paths"].items():
        assert path.startswith("/")
        for method, operation in item.items():
            assert method in HTTP_METHODS, (path, method)
            assert operation["responses"], (path, method)
            for status, response in operation["responses"].items():
                assert re.fullmatch(r"[1-5]\d\d|[1-5]XX|default", status), (path, status)
                assert isinstance(response["description"], str), (path, method, status)
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == set(re.findall(r"{([^}]+)}", path)), (path, method)
            for param in operation.get("parameters", []):
                assert param["in"] in ("query", "header", "path", "cookie"), param
                if param["in"] == "path":
                    assert param["required"] is True, param


def test_every_schema_is_valid_json_schema_2020_12(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert schemas
    everywhere = [(("components", name), s) for name, s in schemas.items()]
    everywhere += [(("paths", where), s) for where, s in iter_schemas(doc["paths"])]
    for where, schema in everywhere:
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            pytest.fail(f"{where}: {exc.message}")


def test_every_ref_resolves(doc: dict[str, Any]) -> None:
    registry: Registry[Any] = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(doc))
    resolver = registry.resolver(base_uri=DOC_URI)
    refs = set(iter_refs(doc))
    assert refs
    for ref in refs:
        assert ref.startswith("#/"), ref
        assert resolver.lookup(ref).contents, ref


def test_every_route_is_documented(app: Any, doc: dict[str, Any]) -> None:
    documented = {path: set(item) for path, item in doc["paths"].items()}
    routes = [
        rule
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api") or rule.rule in ("/healthz", "/readyz", "/metrics")
    ]
    assert routes
    for rule in routes:
        path = openapi_path(rule.rule)
        assert path in documented, f"{rule.rule} is not in the document"
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            assert method.lower() in documented[path], f"{method} {rule.rule} is not documented"


@pytest.mark.parametrize(("method", "path", "statuses"), SPEC_OPERATIONS)
def test_every_spec_operation_is_documented(
    doc: dict[str, Any], method: str, path: str, statuses: set[str]
) -> None:
    assert path in doc["paths"], f"{path} is not in the document"
    assert method in doc["paths"][path], f"{method.upper()} {path} is not documented"
    responses = set(doc["paths"][path][method]["responses"])
    assert statuses <= responses, statuses - responses
    if path.startswith("/api"):
        assert "401" in responses, f"{method.upper()} {path}: 401 undocumented"


def test_documented_request_body_matches_what_is_accepted(doc: dict[str, Any]) -> None:
    check_schema = {
        "$ref": f"{DOC_URI}#"
        + pointer(
            "paths", "/api/runs", "post", "requestBody", "content", "application/json", "schema"
        )
    }
    registry: Registry[Any] = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(doc))
    validator = Draft202012Validator(check_schema, registry=registry)
    assert validator.is_valid({"scenario_id": "hello_sequence", "input": {"name": "x"}})
    assert validator.is_valid({"scenario_id": "hello_sequence"})
    for bad in (
        {},
        {"scenario_id": 5},
        {"scenario_id": "x", "input": []},
        {"scenario_id": "x", "extra": 1},
    ):
        assert not validator.is_valid(bad), bad


# -- real responses --------------------------------------------------------------------------


def finished(client: Any, r: redis.Redis, run_id: str) -> dict[str, Any]:
    """The run's snapshot once `run_finished` is in its stream (XREAD BLOCK)."""
    events_until_finished(r, run_id, timeout=30, what=f"run {run_id} to finish")
    snapshot: dict[str, Any] = client.get(f"/api/runs/{run_id}").get_json()
    assert snapshot["status"] in TERMINAL, snapshot
    return snapshot


@pytest.mark.parametrize(
    ("scenario_id", "run_input", "status"),
    [
        ("hello_sequence", {"name": "Ada"}, "succeeded"),
        ("failing_step", {"reason": "boom"}, "failed"),
        ("test_continue", {}, "succeeded"),
    ],
)
def test_finished_run_responses_match(
    client: Any,
    r: redis.Redis,
    doc: dict[str, Any],
    worker: WorkerProcess,
    scenario_id: str,
    run_input: dict[str, Any],
    status: str,
) -> None:
    created = client.post("/api/runs", json={"scenario_id": scenario_id, "input": run_input})
    check_response(doc, "post", "/api/runs", created)
    run_id = created.get_json()["run_id"]
    assert finished(client, r, run_id)["status"] == status

    check_response(doc, "get", "/api/runs/{run_id}", client.get(f"/api/runs/{run_id}"))
    page = client.get(
        f"/api/runs/{run_id}/events?limit=1000", headers={"Accept": "application/json"}
    )
    check_response(doc, "get", "/api/runs/{run_id}/events", page)
    assert page.get_json()["events"][-1]["type"] == "run_finished"
    stream = client.get(f"/api/runs/{run_id}/events")  # a finished run's stream ends
    check_response(doc, "get", "/api/runs/{run_id}/events", stream)
    assert "event: run_finished" in stream.get_data(as_text=True)
    check_response(doc, "get", "/api/runs", client.get("/api/runs"))
    check_response(doc, "get", "/api/runs", client.get(f"/api/runs?status={status}"))


def test_queued_run_responses_match(quiet_client: Any, doc: dict[str, Any]) -> None:
    body = {"scenario_id": "hello_sequence", "input": {"name": "Ada"}}
    created = quiet_client.post("/api/runs", json=body, headers={"Idempotency-Key": "k"})
    assert created.status_code == 202
    check_response(doc, "post", "/api/runs", created)
    replay = quiet_client.post("/api/runs", json=body, headers={"Idempotency-Key": "k"})
    assert replay.status_code == 200
    check_response(doc, "post", "/api/runs", replay)
    run_id = created.get_json()["run_id"]
    snapshot = quiet_client.get(f"/api/runs/{run_id}")
    assert snapshot.get_json()["status"] == "queued"
    check_response(doc, "get", "/api/runs/{run_id}", snapshot)
    page = quiet_client.get(f"/api/runs/{run_id}/events", headers={"Accept": "application/json"})
    check_response(doc, "get", "/api/runs/{run_id}/events", page)
    quiet_client.post("/api/runs", json={"scenario_id": "fan_out_join", "input": {}})
    listed = quiet_client.get("/api/runs?limit=1")
    assert listed.get_json()["next_before"] is not None
    check_response(doc, "get", "/api/runs", listed)
    check_response(doc, "get", "/api/runs", quiet_client.get("/api/runs?status=failed"))


def test_catalog_responses_match(client: Any, doc: dict[str, Any]) -> None:
    scenarios = client.get("/api/scenarios")
    check_response(doc, "get", "/api/scenarios", scenarios)
    assert scenarios.get_json()
    for summary in scenarios.get_json():
        scenario = client.get(f"/api/scenarios/{summary['scenario_id']}")
        check_response(doc, "get", "/api/scenarios/{scenario_id}", scenario)
    check_response(doc, "get", "/api/tools", client.get("/api/tools"))


def test_openapi_response_itself_is_documented(client: Any, doc: dict[str, Any]) -> None:
    check_response(doc, "get", "/api/openapi.json", client.get("/api/openapi.json"))


def test_probe_responses_match(client: Any, doc: dict[str, Any], worker: WorkerProcess) -> None:
    check_response(doc, "get", "/healthz", client.get("/healthz"))
    # The store database was just emptied: wait for the worker's next heartbeat.
    ready = wait_for(
        lambda: (response := client.get("/readyz")).status_code == 200 and response,
        what="a worker heartbeat",
    )
    check_response(doc, "get", "/readyz", ready)
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    check_response(doc, "get", "/metrics", metrics)


def test_not_ready_response_matches(
    app_factory: Callable[..., Any], quiet_db: str, doc: dict[str, Any]
) -> None:
    """A store database no worker writes its heartbeat to: 503 with the reason."""
    not_ready = app_factory(redis_url=quiet_db).test_client().get("/readyz")
    assert not_ready.status_code == 503
    check_response(doc, "get", "/readyz", not_ready)


@pytest.mark.parametrize(
    ("method", "path", "url", "kwargs", "status"),
    [
        (
            "post",
            "/api/runs",
            "/api/runs",
            {"data": "{bad", "content_type": "application/json"},
            400,
        ),
        ("post", "/api/runs", "/api/runs", {"json": {"scenario_id": 5}}, 400),
        ("post", "/api/runs", "/api/runs", {"json": {"scenario_id": "nope", "input": {}}}, 404),
        (
            "post",
            "/api/runs",
            "/api/runs",
            {"json": {"scenario_id": "hello_sequence", "input": {"name": ""}}},
            422,
        ),
        ("get", "/api/runs", "/api/runs?limit=0", {}, 400),
        ("get", "/api/runs", "/api/runs?status=bogus", {}, 400),
        ("get", "/api/runs/{run_id}", "/api/runs/nope", {}, 404),
        (
            "get",
            "/api/runs/{run_id}/events",
            "/api/runs/nope/events",
            {"headers": {"Accept": "application/json"}},
            404,
        ),
        ("get", "/api/runs/{run_id}/events", "/api/runs/nope/events", {}, 404),
        ("get", "/api/runs/{run_id}/events", "/api/runs/nope/events?after=zz", {}, 400),
        # A plain GET is not a WebSocket handshake.
        ("get", "/api/runs/{run_id}/ws", "/api/runs/nope/ws", {}, 400),
        ("get", "/api/scenarios/{scenario_id}", "/api/scenarios/nope", {}, 404),
    ],
)
def test_error_responses_match(
    quiet_client: Any,
    doc: dict[str, Any],
    method: str,
    path: str,
    url: str,
    kwargs: dict[str, Any],
    status: int,
) -> None:
    response = quiet_client.open(url, method=method.upper(), **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    check_response(doc, method, path, response)


def test_conflict_response_matches(quiet_client: Any, doc: dict[str, Any]) -> None:
    key = {"Idempotency-Key": "once"}
    quiet_client.post("/api/runs", json={"scenario_id": "fan_out_join"}, headers=key)
    conflict = quiet_client.post("/api/runs", json={"scenario_id": "test_continue"}, headers=key)
    assert conflict.status_code == 409
    check_response(doc, "post", "/api/runs", conflict)


def test_too_large_and_unavailable_responses_match(
    app_factory: Callable[..., Any], r: redis.Redis, doc: dict[str, Any]
) -> None:
    body = {"scenario_id": "hello_sequence", "input": {"name": "x" * 500}}
    small = app_factory(max_body_bytes=200).test_client()
    too_large = small.post("/api/runs", json=body)
    assert too_large.status_code == 413
    check_response(doc, "post", "/api/runs", too_large)
    cut_off = app_factory(broker_url="redis://127.0.0.1:1/0").test_client()
    unavailable = cut_off.post("/api/runs", json={"scenario_id": "fan_out_join"})
    assert unavailable.status_code == 503
    check_response(doc, "post", "/api/runs", unavailable)


@pytest.mark.parametrize(
    ("method", "path", "url"),
    [
        ("get", "/api/runs", "/api/runs"),
        ("post", "/api/runs", "/api/runs"),
        ("get", "/api/runs/{run_id}/events", "/api/runs/x/events"),
        ("get", "/api/scenarios", "/api/scenarios"),
        ("get", "/api/openapi.json", "/api/openapi.json"),
    ],
)
def test_unauthorized_responses_match(
    app_factory: Callable[..., Any],
    r: redis.Redis,
    doc: dict[str, Any],
    method: str,
    path: str,
    url: str,
) -> None:
    locked = app_factory(api_token="s3cret").test_client()
    response = locked.open(url, method=method.upper(), json={})
    assert response.status_code == 401
    check_response(doc, method, path, response)


@pytest.mark.parametrize(
    ("query", "status"), [("", 404), ("?after=zz", 400)], ids=["unknown-run", "bad-cursor"]
)
def test_refused_websocket_handshake_matches(
    live_server: Any, doc: dict[str, Any], query: str, status: int
) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        ws_connection(live_server.url, "nope", query=query.removeprefix("?"), timeout=10)
    assert refused.value.status_code == status
    headers = {k.lower(): v for k, v in (refused.value.resp_headers or {}).items()}
    mimetype = headers["content-type"].split(";")[0]
    body = json.loads(refused.value.resp_body)
    check_body(doc, "get", "/api/runs/{run_id}/ws", status, mimetype, body)
