"""The schemas of the OpenAPI document (`web/openapi.py`).

The run summary, the listed run and the snapshot with its steps are generated from the
models the store answers with (`tasks/views.py`), so the document cannot drift from
what the API sends; their enums (`RunStatus`, `StepStatus`) come along as components
of their own. A scenario's steps are generated from the step kinds' models likewise.
The other shapes are written out here.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from tasks.kinds import KINDS
from tasks.scenario import SCENARIO_ID_PATTERN
from tasks.views import ListedRun, RunSnapshot, RunSummary, StepSnapshot

from .api import MAX_BATCH, RunRequest


class _Schemas(GenerateJsonSchema):
    """Pydantic's JSON Schema, kept short: no per-field titles, and `["string",
    "null"]` rather than an `anyOf` for a nullable plain type."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        inner = self.generate_inner(schema["schema"])
        if set(inner) == {"type"} and isinstance(inner["type"], str):
            return {"type": [inner["type"], "null"]}
        return super().nullable_schema(schema)


def view_schemas() -> dict[str, Any]:
    """The schemas of the API's views of a run, by model name, with every `$defs` entry
    they refer to (`RunStatus`, `StepStatus`) as a component of its own."""
    _, generated = models_json_schema(
        [(model, "serialization") for model in (RunSummary, ListedRun, RunSnapshot, StepSnapshot)],
        ref_template="#/components/schemas/{model}",
        schema_generator=_Schemas,
    )
    defs: dict[str, Any] = generated["$defs"]
    return defs


def step_schemas() -> dict[str, Any]:
    """The schema of each step kind's model as a scenario's definition shows it (every
    field spelled out, so every field required), with `RetryPolicy` beside them."""
    _, generated = models_json_schema(
        [(kind.model, "validation") for kind in KINDS],
        ref_template="#/components/schemas/{model}",
        schema_generator=_Schemas,
    )
    defs: dict[str, Any] = generated["$defs"]
    for kind in KINDS:
        schema = defs[kind.model.__name__]
        schema["required"] = list(schema["properties"])
    return defs


VIEWS = view_schemas()
STEPS = step_schemas()

SCHEMAS: dict[str, Any] = {
    "RunRequest": RunRequest.model_json_schema(),
    **VIEWS,
    **STEPS,
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {},
                },
            }
        },
    },
    "RunCreated": {
        "allOf": [
            {"$ref": "#/components/schemas/RunSummary"},
            {
                "type": "object",
                "properties": {
                    "stream_token": {
                        "type": "string",
                        "description": (
                            "Read-only token for this run only (snapshot, events page, SSE, "
                            "WebSocket), as `Authorization: Bearer` or `?access_token=`; "
                            "expires after STEPSTREAM_RUN_TOKEN_TTL_S. Absent when neither "
                            "STEPSTREAM_API_TOKEN nor STEPSTREAM_SECRET_KEY is set."
                        ),
                    }
                },
            },
        ]
    },
    "BatchRequest": {
        "type": "object",
        "required": ["runs"],
        "additionalProperties": False,
        "properties": {
            "runs": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH,
                "items": {"$ref": "#/components/schemas/RunRequest"},
            }
        },
    },
    "BatchCreated": {
        "type": "object",
        "required": ["runs"],
        "properties": {
            "runs": {
                "type": "array",
                "description": "The runs, in the order of the request's entries.",
                "items": {"$ref": "#/components/schemas/RunCreated"},
            }
        },
    },
    "RunList": {
        "type": "object",
        "required": ["runs", "next_before"],
        "properties": {
            # SPEC §6: entries of a listing leave out `input` (the snapshot has it).
            "runs": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/ListedRun"},
            },
            "next_before": {
                "type": ["string", "null"],
                "description": "Pass as `before` to get the next page; null on the last.",
            },
        },
    },
    "Event": {
        "type": "object",
        "description": "A step lifecycle event (SPEC §5) with its stream `id`.",
        "required": ["id", "schema_version", "type", "run_id", "seq", "ts"],
        "properties": {
            "id": {"type": "string", "pattern": r"^\d+-\d+$"},
            "schema_version": {"const": 1},
            "type": {"type": "string"},
            "run_id": {"type": "string"},
            "seq": {"type": "integer", "minimum": 1},
            "ts": {"type": "string", "format": "date-time"},
        },
        "additionalProperties": True,
    },
    "EventPage": {
        "type": "object",
        "required": ["events", "next_after"],
        "properties": {
            "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
            "next_after": {"type": ["string", "null"]},
        },
    },
    "ScenarioSummary": {
        "type": "object",
        "required": ["scenario_id", "name", "description", "input_schema", "step_count"],
        "properties": {
            "scenario_id": {"type": "string", "pattern": SCENARIO_ID_PATTERN},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "input_schema": {"type": "object"},
            "step_count": {"type": "integer", "minimum": 1},
        },
    },
    "Scenario": {
        "type": "object",
        "required": [
            "schema_version",
            "scenario_id",
            "name",
            "description",
            "input_schema",
            "steps",
        ],
        "properties": {
            "schema_version": {"const": "1"},
            "scenario_id": {"type": "string"},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "input_schema": {"type": "object"},
            "steps": {
                "type": "array",
                "description": "One of the step kinds (tasks/kinds), each told by its key.",
                "items": {
                    "oneOf": [
                        {"$ref": f"#/components/schemas/{kind.model.__name__}"} for kind in KINDS
                    ]
                },
            },
        },
    },
    "ScenarioProblem": {
        "type": "object",
        "required": ["path", "scenario_id", "reason"],
        "properties": {
            "path": {"type": "string", "description": "The file, as the web reads it."},
            "scenario_id": {
                "type": ["string", "null"],
                "description": "The id the file names, when it can be read.",
            },
            "reason": {"type": "string"},
        },
    },
    "Tool": {
        "type": "object",
        "required": [
            "name",
            "description",
            "input_schema",
            "source",
            "available",
            "restart_needed",
        ],
        "properties": {
            "name": {"type": "string", "description": "`<server>.<tool>` for an MCP tool."},
            "description": {"type": "string"},
            "input_schema": {"type": "object"},
            "source": {"type": "string", "enum": ["python", "mcp"]},
            "available": {
                "type": "boolean",
                "description": (
                    "False while the tool's MCP server does not answer, and for a Python "
                    "tool this web server has not loaded (known from the workers only)."
                ),
            },
            "server": {"type": "string", "description": "The MCP server (MCP tools only)."},
            "error": {"type": "string", "description": "Why the server is unavailable."},
            "loaded": {
                "type": "boolean",
                "description": "Python tools: whether a live worker has loaded it.",
            },
            "restart_needed": {
                "type": "boolean",
                "description": (
                    "Whether a worker (or the web server) must restart to run the tool as "
                    "it is on disk: see `reason`. Always false for MCP tools."
                ),
            },
            "reason": {
                "type": ["string", "null"],
                "description": (
                    "Why a restart is needed: `changed on disk since worker <name> "
                    "started` (its module's content changed), `new on disk since worker "
                    "<name> started` / `new entry point ... on disk since ...` (installed "
                    "since), `loaded by no live worker (...)`, or `loaded by worker <name> "
                    "but not by the web server, ...`; null when none is."
                ),
            },
            "entry_point": {
                "type": "string",
                "description": (
                    "For a tool known only as a `stepstream.tools` entry point installed "
                    "since the workers started (`name = module:attr`): `loaded` is false."
                ),
            },
        },
    },
    "Worker": {
        "type": "object",
        "required": [
            "name",
            "status",
            "last_heartbeat",
            "seconds_since",
            "active_runs",
            "processed",
            "queues",
            "concurrency",
            "busy",
            "current_steps",
            "extra",
        ],
        "properties": {
            "name": {"type": "string", "description": "The Celery node name, name@host."},
            "status": {"enum": ["ok", "stale", "unknown"]},
            "last_heartbeat": {"type": ["string", "null"], "format": "date-time"},
            "seconds_since": {"type": ["number", "null"]},
            "active_runs": {"type": "integer", "minimum": 0},
            "processed": {"type": "integer", "minimum": 0},
            "queues": {
                "type": ["array", "null"],
                "items": {"type": "string"},
                "description": "The Celery queues it consumes; null when its row does not say.",
            },
            "concurrency": {
                "type": ["integer", "null"],
                "minimum": 0,
                "description": "Its slots (pool processes or threads); null when unknown.",
            },
            "busy": {
                "type": "integer",
                "minimum": 0,
                "description": "Slots in use at its last heartbeat (any stepstream task).",
            },
            "current_steps": {
                "type": "array",
                "description": (
                    "The step attempts it runs, oldest first, at most 20, as of its last "
                    "heartbeat (it beats again as soon as its tasks change)."
                ),
                "items": {
                    "type": "object",
                    "required": ["run_id", "step", "attempt", "started_at"],
                    "properties": {
                        "run_id": {"type": "string"},
                        "step": {"type": "string"},
                        "attempt": {"type": ["integer", "null"]},
                        "started_at": {
                            "type": ["string", "null"],
                            "format": "date-time",
                            "description": "When its slot took it, on the worker's clock.",
                        },
                    },
                },
            },
            "extra": {"type": "object"},
        },
    },
    "Probe": {"type": "object", "required": ["status"], "properties": {"status": {}}},
}
