"""The REST API under `/api`: runs, scenarios and tools."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from tasks.errors import (
    BackendUnavailable,
    BackendUnreachable,
    Conflict,
    InvalidInput,
    InvalidRequest,
    NotFound,
)
from tasks.id_index import id_prefix
from tasks.input_messages import input_errors as schema_input_errors
from tasks.scenario import Scenario
from tasks.statuses import RUN_STATUSES, ScriptOutcome
from tasks.store import CreatedRun
from tasks.strict_json import NotStrictJSON
from tasks.strict_json import loads as strict_loads
from tasks.task_names import ENFORCE_CANCEL
from tasks.workers import queued_reason, tool_states, waiting_queues

from .cursors import limit_arg
from .idempotency import (
    batch_claim,
    batch_runs,
    check_idempotency_key,
    claim_idempotency_key,
    confirm_idempotency_key,
    release_claim,
    undo_later,
    undo_run,
    undo_runs,
)
from .registry import registry
from .roots import send_roots
from .run_tokens import token_field
from .services import services

__all__ = ["bp", "claim_idempotency_key", "confirm_idempotency_key", "undo_run"]

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_LIMIT = 200
#: The most runs one `POST /api/runs/batch` may submit (SPEC §15).
MAX_BATCH = 1000
#: A batch's body may be this many times `STEPSTREAM_MAX_BODY_BYTES` (8 MiB by default:
#: 1,000 runs whose inputs are up to about 8 KiB of JSON each).
BATCH_BODY_FACTOR = 8


class RunRequest(BaseModel):
    """Body of `POST /api/runs`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    scenario_id: str = Field(min_length=1, max_length=64)
    input: dict[str, Any] = Field(default_factory=dict)


def json_body(limit: int | None = None) -> Any:
    """The request's body as strict JSON (SPEC §14): 400 naming what is wrong. `limit`
    is the largest body in bytes (`STEPSTREAM_MAX_BODY_BYTES` unless given)."""
    if limit is None:
        limit = services().settings.max_body_bytes
    else:
        request.max_content_length = limit
    raw = request.get_data(cache=True)
    # Without a Content-Length werkzeug silently cuts the body at the limit; a body that
    # reached the limit is treated as one that went past it.
    if request.content_length is None and len(raw) >= limit:
        raise RequestEntityTooLarge(f"the body is larger than {limit} bytes")
    try:
        return strict_loads(raw)
    except NotStrictJSON as exc:
        details = [{"path": exc.path, "message": exc.message}] if exc.path else None
        raise InvalidRequest(f"body is not strict JSON: {exc}", details) from None


def json_pointer(path: Any) -> str:
    """A jsonschema error path as a JSONPath-like string: `$.items[0].url`."""
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def input_errors(scenario: Scenario, run_input: dict[str, Any]) -> list[dict[str, Any]]:
    """The 422's details: `{path, message, constraint}` each, in words a person reads
    (tasks/input_messages.py, which the browser form's own checks follow)."""
    return schema_input_errors(scenario.input_schema, run_input)


def with_defaults(scenario: Scenario, run_input: dict[str, Any]) -> dict[str, Any]:
    """Fill the top-level `default`s of the input schema, as a form would."""
    filled = dict(run_input)
    for name, prop in (scenario.input_schema.get("properties") or {}).items():
        if name not in filled and isinstance(prop, dict) and "default" in prop:
            filled[name] = prop["default"]
    return filled


def parse_run_request() -> RunRequest:
    body = json_body()
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object with scenario_id and input")
    try:
        return RunRequest.model_validate(body)
    except ValidationError as exc:
        details = [
            {"path": json_pointer(e["loc"]), "message": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        raise InvalidRequest("invalid request body", details) from None


@bp.post("/runs")
def create_run() -> tuple[Response, int, dict[str, str]]:
    svc = services()
    req = parse_run_request()
    scenario = svc.catalog.get(req.scenario_id)
    if scenario is None:
        raise NotFound(f"unknown scenario {req.scenario_id!r}")
    run_input = with_defaults(scenario, req.input)
    errors = input_errors(scenario, run_input)
    if errors:
        raise InvalidInput("input does not match the scenario's input_schema", errors)

    run_id = str(uuid.uuid4())
    idem = request.headers.get("Idempotency-Key")
    if idem is not None:
        previous = claim_idempotency_key(idem, run_id, req)
        if previous is not None:
            return replay(previous)
    made = record_and_send([(run_id, scenario, run_input)], idem, req)
    if isinstance(made, str):
        return replay(made)
    (created,) = made
    svc.metrics.runs_submitted.labels(scenario.scenario_id).inc()
    # The run as created: a worker may have started it already, but this answers the POST.
    answer = created.summary | token_field(run_id)
    return jsonify(answer), 202, {"Location": f"/api/runs/{run_id}"}


def record_and_send(
    runs: list[tuple[str, Scenario, dict[str, Any]]], idem: str | None, req: BaseModel
) -> tuple[CreatedRun, ...] | str:
    """Record runs, their roots ready (one script call, or one pipeline of them), then
    send the roots' `run_step` tasks through one producer. Returns the runs as created,
    or the claim of the request that took the Idempotency-Key over meanwhile (these runs
    are then undone, never sent). A failure answers 503 with nothing left behind.

    Between the record and the send the roots are owed dispatches (watch index): a web
    that dies there leaves them to the sweeper, which sends them after
    `STEPSTREAM_REDELIVER_S`.
    """
    svc = services()
    run_ids = [run_id for run_id, _, _ in runs]
    try:
        created = svc.store.create_runs(runs)
    except BackendUnavailable as exc:
        # Redis that does not answer is not asked again to undo now (that would only
        # wait again). Runs recorded before the reply was lost are taken over by a
        # retry with the same Idempotency-Key once the claim is abandoned; without a
        # key, nobody will ask for them: they are deleted once Redis answers again.
        if not isinstance(exc, BackendUnreachable):
            undo_runs(run_ids, idem)
        elif idem is None:
            undo_later(svc.store, run_ids)
        noun = "run" if len(runs) == 1 else "runs"
        raise BackendUnavailable(f"could not record the {noun}: {exc.cause or exc}") from None
    try:
        # The claim becomes final before the runs are sent: a request that took the key
        # over meanwhile wins, and these runs, never sent, are undone.
        claim = batch_claim(run_ids)
        holder = None if idem is None else confirm_idempotency_key(idem, claim, req)
        if holder is None:
            send_roots(created)
    except BackendUnavailable as exc:
        if not went_on(run_ids, idem):
            noun = "run" if len(runs) == 1 else "runs"
            raise BackendUnavailable(f"could not enqueue the {noun}: {exc.cause or exc}") from None
        log.warning("runs %s: the broker's answer was lost, but they started", run_ids)
        holder = None
    if holder is not None:
        undo_runs(run_ids, None)
        return holder
    # Only runs that exist are announced to the all-runs stream.
    svc.store.publish_all([event for run in created for event in run.events])
    return tuple(created)


def went_on(run_ids: list[str], idem: str | None) -> bool:
    """After sending the runs' roots failed: whether they went on anyway (the broker
    took the message, its answer was lost, and a worker started one), or else are
    withdrawn, all of them, so that a root that did arrive starts nothing and the
    request answers 503 with nothing half-created."""
    svc = services()
    try:
        if not svc.store.withdraw_runs(run_ids):
            return True
    except BackendUnavailable:
        # Redis is away too: delete them once it is back, unless one started meanwhile.
        undo_later(svc.store, run_ids)
        return False
    release_claim(run_ids, idem)
    return False


def replay(previous: str) -> tuple[Response, int, dict[str, str]]:
    """The answer to a request whose Idempotency-Key names an earlier run."""
    summary = services().store.summary(previous)
    if summary is None:
        raise Conflict("a request with this Idempotency-Key is still being processed")
    # A fresh run token: the first answer's may have been lost, or have expired.
    return jsonify(summary | token_field(previous)), 200, {"Location": f"/api/runs/{previous}"}


class BatchRequest(BaseModel):
    """Body of `POST /api/runs/batch`, once each entry passed (its digest is the batch's
    `Idempotency-Key`'s)."""

    runs: list[RunRequest]


def parse_batch() -> list[Any]:
    """The entries of a batch's body, not yet checked: 400 when it is not
    `{"runs": [...]}` with 1 to MAX_BATCH entries."""
    body = json_body(BATCH_BODY_FACTOR * services().settings.max_body_bytes)
    if not isinstance(body, dict) or set(body) != {"runs"} or not isinstance(body["runs"], list):
        raise InvalidRequest('body must be a JSON object {"runs": [{scenario_id, input}, ...]}')
    entries = body["runs"]
    if not 1 <= len(entries) <= MAX_BATCH:
        raise InvalidRequest(f"runs must hold 1 to {MAX_BATCH} entries, not {len(entries)}")
    return entries


def batch_entry(
    index: int, entry: Any, errors: list[dict[str, Any]]
) -> tuple[RunRequest, Scenario, dict[str, Any]] | None:
    """Entry `index` of a batch checked as `POST /api/runs` checks its body; what is
    wrong with it is added to `errors`, each naming the entry by its index."""
    if not isinstance(entry, dict):
        message = "an entry must be a JSON object with scenario_id and input"
        errors.append({"index": index, "path": "$", "message": message})
        return None
    try:
        req = RunRequest.model_validate(entry)
    except ValidationError as exc:
        errors += [
            {"index": index, "path": json_pointer(e["loc"]), "message": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        return None
    scenario = services().catalog.get(req.scenario_id)
    if scenario is None:
        message = f"unknown scenario {req.scenario_id!r}"
        errors.append({"index": index, "path": "$.scenario_id", "message": message})
        return None
    run_input = with_defaults(scenario, req.input)
    wrong = input_errors(scenario, run_input)
    errors += [{"index": index, **error} for error in wrong]
    return None if wrong else (req, scenario, run_input)


@bp.post("/runs/batch")
def create_runs() -> tuple[Response, int]:
    """Submit many runs at once (SPEC §15): every entry is checked first, and one bad
    entry creates nothing; then all are recorded in one pipeline and their roots sent
    through one producer."""
    svc = services()
    entries = parse_batch()
    idem = request.headers.get("Idempotency-Key")
    if idem is not None:
        check_idempotency_key(idem)
    errors: list[dict[str, Any]] = []
    checked = [batch_entry(i, entry, errors) for i, entry in enumerate(entries)]
    if errors:
        raise InvalidInput("some entries are invalid; no run was created", errors)
    valid = [c for c in checked if c is not None]
    batch = BatchRequest(runs=[req for req, _, _ in valid])
    runs = [(str(uuid.uuid4()), scenario, run_input) for _, scenario, run_input in valid]
    run_ids = [run_id for run_id, _, _ in runs]
    if idem is not None:
        previous = claim_idempotency_key(idem, batch_claim(run_ids), batch)
        if previous is not None:
            return replay_batch(batch_runs(previous))
    made = record_and_send(runs, idem, batch)
    if isinstance(made, str):
        return replay_batch(batch_runs(made))
    for run in made:
        svc.metrics.runs_submitted.labels(run.summary["scenario_id"]).inc()
    answer = [run.summary | token_field(run.summary["run_id"]) for run in made]
    return jsonify({"runs": answer}), 202


def replay_batch(previous: list[str]) -> tuple[Response, int]:
    """The answer to a batch whose Idempotency-Key names an earlier batch's runs."""
    store = services().store
    answer = []
    for run_id in previous:
        summary = store.summary(run_id)
        if summary is None:
            raise Conflict("a request with this Idempotency-Key is still being processed")
        answer.append(summary | token_field(run_id))
    return jsonify({"runs": answer}), 200


def known_scenario(scenario_id: str) -> bool:
    return services().catalog.get(scenario_id) is not None


@bp.get("/runs")
def list_runs() -> Response:
    args = request.args
    status = args.get("status") or None
    if status is not None and status not in RUN_STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(RUN_STATUSES)}")
    limit = limit_arg(50, MAX_LIMIT)
    scenario_id = args.get("scenario_id") or None
    if scenario_id is not None and not known_scenario(scenario_id):
        raise InvalidRequest(f"unknown scenario_id {scenario_id!r} (see GET /api/scenarios)")
    before = args.get("before") or None
    # The start of a run's id (4 characters or more) or all of it.
    run_id = args.get("run_id") or None
    if run_id is not None:
        run_id = id_prefix(run_id)
    store = services().store
    if before is not None and store.index_score(before) is None:
        raise InvalidRequest("before must be the run_id of a listed run (see next_before)")
    runs, next_before = store.list_runs(
        status=status,
        scenario_id=scenario_id,
        limit=limit,
        before=before,
        run_id=run_id,
    )
    return jsonify({"runs": runs, "next_before": next_before})


@bp.post("/runs/<run_id>/cancel")
def cancel_run(run_id: str) -> tuple[Response, int]:
    svc = services()
    transition = svc.store.cancel_run(run_id)
    if transition.outcome == ScriptOutcome.MISSING:
        raise NotFound(f"unknown run {run_id!r}")
    if transition.outcome == ScriptOutcome.FINISHED:
        raise Conflict(f"run {run_id!r} has already finished")
    if transition.outcome == ScriptOutcome.CANCELLING:
        # Steps still running get the grace to notice ctx.cancelled; then they are ended.
        try:
            svc.send_task(ENFORCE_CANCEL, [run_id], countdown=svc.settings.cancel_grace_s)
        except BackendUnreachable as exc:
            # The cancel stands; the run still ends when its running steps return.
            log.warning("could not schedule the end of cancelled run %s: %s", run_id, exc)
    return jsonify(svc.store.summary(run_id)), 202


@bp.get("/runs/<run_id>")
def get_run(run_id: str) -> Response:
    svc = services()
    snapshot = svc.store.snapshot(run_id)
    if snapshot is None:
        raise NotFound(f"unknown run {run_id!r}")
    # Read now, from the registry: only a run that waits on a worker pays for it.
    queues = waiting_queues(snapshot, svc.settings.queue)
    if queues is not None:
        snapshot["queued_reason"] = queued_reason(registry(), queues)
    return jsonify(snapshot)


@bp.get("/scenarios")
def list_scenarios() -> Response:
    return jsonify([s.summary() for s in services().catalog.list()])


@bp.get("/scenarios/problems")
def scenario_problems() -> Response:
    """Every scenario file left out, and why (a duplicate `scenario_id` makes both files
    problems); `problems` itself can be no scenario's id."""
    return jsonify(
        [
            {"path": e.path, "scenario_id": e.scenario_id, "reason": e.reason}
            for e in services().catalog.errors
        ]
    )


@bp.get("/scenarios/<scenario_id>")
def get_scenario(scenario_id: str) -> Response:
    scenario = services().catalog.get(scenario_id)
    if scenario is None:
        raise NotFound(f"unknown scenario {scenario_id!r}")
    return jsonify(scenario.definition())


@bp.get("/workers")
def list_workers() -> Response:
    return jsonify(registry().workers)


@bp.get("/tools")
def list_tools() -> Response:
    """The tools, each saying whether a live worker loaded it and whether a restart is
    needed for what changed on disk since (see `tasks.workers.tool_states`)."""
    svc = services()
    python = tool_states([t.summary() for t in svc.tools.list()], registry())
    # A server's tools are listed again while the system runs: no restart for those.
    mcp = [
        {**t, "restart_needed": False, "reason": None}
        for t in svc.mcp.summaries(shadowed=svc.tools)
    ]
    return jsonify(sorted(python + mcp, key=lambda t: str(t["name"])))


@bp.post("/tools/refresh")
def refresh_tools() -> tuple[Response, int]:
    """List the MCP servers' tools again, in the background: GET /api/tools shows it."""
    mcp = services().mcp
    if not mcp.enabled:
        return jsonify({"status": "no MCP servers configured"}), 202
    mcp.request_refresh()
    return jsonify({"status": "refreshing"}), 202
