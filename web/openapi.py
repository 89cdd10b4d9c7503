"""`GET /api/openapi.json`: the OpenAPI 3.1 description of the API as it behaves."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from tasks.id_index import ID_SHAPE, MAX_MATCHES, MIN_PREFIX
from tasks.statuses import RUN_STATUSES

from .api import BATCH_BODY_FACTOR, MAX_BATCH, MAX_LIMIT
from .openapi_schemas import SCHEMAS

bp = Blueprint("openapi", __name__)


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def error(description: str) -> dict[str, Any]:
    return {"description": description, "content": json_content(ref("Error"))}


RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}
AFTER = {
    "name": "after",
    "in": "query",
    "schema": {"type": "string"},
    "description": "Start after this event id (`<ms>-<seq>`); `0` is the beginning.",
}
AUTH_ERRORS = {"401": error("Missing or wrong bearer token (when auth is on).")}
#: What every POST may answer besides its own errors (SPEC §14).
POST_ERRORS = {
    "403": error(
        "The Origin header names an origin other than this server's own or one of "
        "STEPSTREAM_ALLOWED_ORIGINS."
    ),
    "415": error(
        "The body is not Content-Type: application/json (charset utf-8 if any); a POST "
        "without a body needs no Content-Type."
    ),
}
TRIMMED = {
    "description": (
        "On a read from the beginning of a stream that `MAXLEN` trimming shortened: how "
        "many events were dropped before the first one returned."
    ),
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}

PATHS: dict[str, Any] = {
    "/api/runs": {
        "post": {
            "summary": "Start a run of a scenario",
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "schema": {"type": "string"},
                    "description": "Same key and body within 24 h returns the first run (200).",
                }
            ],
            "requestBody": {"required": True, "content": json_content(ref("RunRequest"))},
            "responses": {
                "202": {
                    "description": "Run accepted and queued.",
                    "headers": {"Location": {"schema": {"type": "string"}}},
                    "content": json_content(ref("RunCreated")),
                },
                "200": {
                    "description": "An earlier run with the same Idempotency-Key.",
                    "content": json_content(ref("RunCreated")),
                },
                "400": error(
                    "Not strict JSON (nested deeper than 64 levels, a number beyond a double, "
                    "a lone surrogate), or bad fields; details give the path."
                ),
                "404": error("Unknown scenario."),
                "409": error("Idempotency-Key reused with a different body."),
                "413": error("Body too large."),
                "422": error("Input fails the scenario's input_schema; details list each error."),
                "503": error("Redis or the broker is unavailable; nothing was created."),
                **AUTH_ERRORS,
                **POST_ERRORS,
            },
        },
        "get": {
            "summary": "List runs, newest first",
            "parameters": [
                {
                    "name": "status",
                    "in": "query",
                    "schema": {"enum": [status.value for status in RUN_STATUSES]},
                },
                {"name": "scenario_id", "in": "query", "schema": {"type": "string"}},
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                },
                {"name": "before", "in": "query", "schema": {"type": "string"}},
                {
                    "name": "run_id",
                    "in": "query",
                    "schema": {
                        "type": "string",
                        "minLength": MIN_PREFIX,
                        "maxLength": len(ID_SHAPE),
                        "pattern": "^[0-9a-fA-F-]+$",
                    },
                    "description": (
                        "Only the runs whose id starts with this (case-insensitive): at "
                        f"least {MIN_PREFIX} characters of a run id, dashes where it has "
                        "them, or all of it. Combines with the other filters and pages "
                        f"alike. A start shared by more than {MAX_MATCHES} runs is 400."
                    ),
                },
            ],
            "responses": {
                "200": {"description": "A page of runs.", "content": json_content(ref("RunList"))},
                "400": error(
                    "Bad filter (an unknown scenario_id too, a run_id that is not the start "
                    "of a run id, or one shared by too many runs), limit or cursor."
                ),
                **AUTH_ERRORS,
            },
        },
    },
    "/api/runs/batch": {
        "post": {
            "summary": "Start many runs at once (SPEC §15)",
            "description": (
                f"1 to {MAX_BATCH} entries, each checked as `POST /api/runs` checks its "
                "body before anything is created: one invalid entry (bad fields, unknown "
                "scenario, input failing its input_schema) is a 422 whose details name "
                "each error by the entry's `index`, and nothing is created. The runs are "
                "recorded together and their first steps sent together. The body may be "
                f"{BATCH_BODY_FACTOR} times STEPSTREAM_MAX_BODY_BYTES."
            ),
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "schema": {"type": "string"},
                    "description": (
                        "Applies to the batch as a whole: the same key and body within "
                        "24 h returns the first batch's runs (200)."
                    ),
                }
            ],
            "requestBody": {"required": True, "content": json_content(ref("BatchRequest"))},
            "responses": {
                "202": {
                    "description": "Runs accepted and queued, in the order of the entries.",
                    "content": json_content(ref("BatchCreated")),
                },
                "200": {
                    "description": "The runs of an earlier batch with the same Idempotency-Key.",
                    "content": json_content(ref("BatchCreated")),
                },
                "400": error(
                    f'Not strict JSON, or not {{"runs": [...]}} with 1 to {MAX_BATCH} entries.'
                ),
                "409": error("Idempotency-Key reused with a different body."),
                "413": error("Body too large."),
                "422": error(
                    "Some entries are invalid; details list each error as {index, path, "
                    "message}, and nothing was created."
                ),
                "503": error("Redis or the broker is unavailable; nothing was created."),
                **AUTH_ERRORS,
                **POST_ERRORS,
            },
        }
    },
    "/api/runs/{run_id}": {
        "get": {
            "summary": "A run's snapshot",
            "parameters": [RUN_ID],
            "responses": {
                "200": {"description": "Snapshot.", "content": json_content(ref("RunSnapshot"))},
                "404": error("Unknown run."),
                **AUTH_ERRORS,
            },
        }
    },
    "/api/runs/{run_id}/cancel": {
        "post": {
            "summary": "Cancel a run",
            "description": (
                "No step starts any more; waiting steps are cancelled; running steps see "
                "`ctx.cancelled` and are ended after a short grace. The run then finishes "
                "`cancelled`. Cancelling a run that is being cancelled changes nothing."
            ),
            "parameters": [RUN_ID],
            "responses": {
                "202": {
                    "description": "Cancelled or being cancelled.",
                    "content": json_content(ref("RunSummary")),
                },
                "404": error("Unknown run."),
                "409": error("The run has already finished."),
                **AUTH_ERRORS,
                **POST_ERRORS,
            },
        }
    },
    "/api/runs/{run_id}/events": {
        "get": {
            "summary": "A run's events: an SSE stream, or a JSON page",
            "description": (
                "With `Accept: application/json`, a page of events after `after`. Otherwise "
                "a `text/event-stream` that replays from `after` (or `Last-Event-ID`) and "
                "tails the run until `run_finished`. A cursor beyond the stream's last "
                "event is 400; one older than the first event kept after `MAXLEN` "
                "trimming is 410 (reload the run and resume from its `last_event_id`). "
                "An event stream asked for after `run_finished` is 204, which tells an "
                "EventSource to stop reconnecting. A read from the beginning of a "
                "trimmed stream returns what is kept, with the `Stepstream-Trimmed` header."
            ),
            "parameters": [
                RUN_ID,
                AFTER,
                {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
            ],
            "responses": {
                "200": {
                    "description": "Events.",
                    "headers": {"Stepstream-Trimmed": TRIMMED},
                    "content": {
                        "application/json": {"schema": ref("EventPage")},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                "204": {
                    "description": (
                        "Event stream only: the cursor is at or after `run_finished`; "
                        "nothing more will come."
                    )
                },
                "400": error("Bad cursor (malformed, or beyond the last event) or limit."),
                "404": error("Unknown run."),
                "410": error(
                    "The events right after the cursor were trimmed (`STEPSTREAM_EVENT_MAXLEN`); "
                    "`details` has `first_id` and `first_seq` of the first event kept."
                ),
                **AUTH_ERRORS,
            },
        }
    },
    "/api/runs/{run_id}/ws": {
        "get": {
            "summary": "A run's events over WebSocket",
            "description": (
                "Upgrade to a WebSocket; one text frame per event, then close code 1000 "
                "after `run_finished`. Other close codes: 1001 server going away, 1011 "
                "internal error, 1013 too far behind or Redis unavailable (reconnect with "
                "`after`), 4400 cursor beyond the last event, 4410 the events after the "
                "cursor were trimmed (reload the run and resume from its `last_event_id`)."
            ),
            "parameters": [RUN_ID, AFTER],
            "responses": {
                "101": {"description": "Switching protocols."},
                "400": error(
                    "Not a WebSocket upgrade, or a bad cursor (malformed, or beyond the "
                    "last event)."
                ),
                "403": error(
                    "The Origin header names an origin other than this server's own or one "
                    "of STEPSTREAM_ALLOWED_ORIGINS (refused before the upgrade)."
                ),
                "404": error("Unknown run."),
                **AUTH_ERRORS,
            },
        }
    },
    "/api/scenarios": {
        "get": {
            "summary": "The scenario catalog",
            "responses": {
                "200": {
                    "description": "Scenarios.",
                    "content": json_content({"type": "array", "items": ref("ScenarioSummary")}),
                },
                **AUTH_ERRORS,
            },
        }
    },
    "/api/scenarios/problems": {
        "get": {
            "summary": "Scenario files left out, and why",
            "responses": {
                "200": {
                    "description": "Every file left out (a duplicate scenario_id makes both"
                    " files problems).",
                    "content": json_content({"type": "array", "items": ref("ScenarioProblem")}),
                },
                **AUTH_ERRORS,
            },
        }
    },
    "/api/scenarios/{scenario_id}": {
        "get": {
            "summary": "A scenario's full definition",
            "parameters": [
                {
                    "name": "scenario_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                }
            ],
            "responses": {
                "200": {"description": "Definition.", "content": json_content(ref("Scenario"))},
                "404": error("Unknown scenario."),
                **AUTH_ERRORS,
            },
        }
    },
    "/api/tools": {
        "get": {
            "summary": "Registered tools",
            "responses": {
                "200": {
                    "description": "Tools.",
                    "content": json_content({"type": "array", "items": ref("Tool")}),
                },
                **AUTH_ERRORS,
            },
        }
    },
    "/api/tools/refresh": {
        "post": {
            "summary": "List the MCP servers' tools again, in the background",
            "responses": {
                "202": {
                    "description": "Refreshing; GET /api/tools shows the result.",
                    "content": json_content(
                        {
                            "type": "object",
                            "required": ["status"],
                            "properties": {"status": {"type": "string"}},
                        }
                    ),
                },
                **AUTH_ERRORS,
                **POST_ERRORS,
            },
        }
    },
    "/api/workers": {
        "get": {
            "summary": "The worker registry",
            "description": (
                "Each worker with its status: `ok` (heard within 3 heartbeat intervals), "
                "`stale` (silent longer), or `unknown` (expected but never heard from). "
                "Workers silent for 24 h are forgotten."
            ),
            "responses": {
                "200": {
                    "description": "Workers, by name.",
                    "content": json_content({"type": "array", "items": ref("Worker")}),
                },
                **AUTH_ERRORS,
            },
        }
    },
    "/api/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1 document.",
                    "content": json_content({"type": "object"}),
                },
                **AUTH_ERRORS,
            },
        }
    },
    "/healthz": {
        "get": {
            "summary": "Liveness",
            "security": [],
            "responses": {
                "200": {"description": "Serving.", "content": json_content(ref("Probe"))}
            },
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness: Redis answers and a worker is alive",
            "security": [],
            "responses": {
                "200": {"description": "Ready.", "content": json_content(ref("Probe"))},
                "503": {"description": "Not ready.", "content": json_content(ref("Probe"))},
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "security": [],
            "responses": {"200": {"description": "Text format.", "content": {"text/plain": {}}}},
        }
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "stepstream",
        "version": "1",
        "description": "Run scenarios on Celery workers and follow their events live.",
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "security": [{"bearer": []}, {}],
}


@bp.get("/api/openapi.json")
def openapi_document() -> Response:
    return jsonify(DOCUMENT)
