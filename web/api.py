"""The REST API under `/api`: runs, scenarios and tools."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

import redis
from flask import Blueprint, Response, jsonify, request
from jsonschema import Draft202012Validator
from kombu.exceptions import OperationalError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from tasks import keys
from tasks.errors import (
    BackendUnavailable,
    Conflict,
    InvalidInput,
    InvalidRequest,
    NotFound,
    StepstreamError,
)
from tasks.events import CursorPlace, Retained, canonical_id, is_stream_id, read_retained
from tasks.redis_client import UNAVAILABLE
from tasks.scenario import Scenario
from tasks.statuses import RUN_STATUSES, RunStatus, ScriptOutcome
from tasks.store import RunStore
from tasks.strict_json import NotStrictJSON
from tasks.strict_json import loads as strict_loads
from tasks.task_names import ENFORCE_CANCEL, RUN_SCENARIO

from . import errors
from .registry import registry
from .run_tokens import token_field
from .services import services

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api")

MAX_LIMIT = 200
#: The same Idempotency-Key is remembered this long.
IDEMPOTENCY_TTL_S = 24 * 3600
#: A key claimed by a request whose run is not recorded this long after the claim was
#: abandoned (its process died, or gave up when Redis went away): another request with
#: the same key and body may take it over.
CLAIM_TIMEOUT_S = 60.0
#: Marks a claim whose run is not yet recorded and sent.
PENDING = "pending"
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
LIMIT = re.compile(r"[0-9]{1,5}")


class RunRequest(BaseModel):
    """Body of `POST /api/runs`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    scenario_id: str = Field(min_length=1, max_length=64)
    input: dict[str, Any] = Field(default_factory=dict)


def json_body() -> Any:
    """The request's body as strict JSON (SPEC §14): 400 naming what is wrong."""
    raw = request.get_data(cache=True)
    # Without a Content-Length werkzeug silently cuts the body at the limit; a body that
    # reached the limit is treated as one that went past it.
    limit = services().settings.max_body_bytes
    if request.content_length is None and len(raw) >= limit:
        raise RequestEntityTooLarge(f"the body is larger than {limit} bytes")
    try:
        return strict_loads(raw)
    except NotStrictJSON as exc:
        details = [{"path": exc.path, "message": exc.message}] if exc.path else None
        raise InvalidRequest(f"body is not strict JSON: {exc}", details) from None


def limit_arg(default: int, maximum: int) -> int:
    raw = request.args.get("limit", str(default))
    if not LIMIT.fullmatch(raw) or not 1 <= int(raw) <= maximum:
        raise InvalidRequest(f"limit must be an integer from 1 to {maximum}")
    return int(raw)


def json_pointer(path: Any) -> str:
    """A jsonschema error path as a JSONPath-like string: `$.items[0].url`."""
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def input_errors(scenario: Scenario, run_input: dict[str, Any]) -> list[dict[str, str]]:
    validator = Draft202012Validator(scenario.input_schema)
    errors = sorted(validator.iter_errors(run_input), key=lambda e: list(map(str, e.path)))
    return [{"path": json_pointer(e.absolute_path), "message": e.message} for e in errors]


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
    try:
        created = svc.store.create_run(run_id, scenario, run_input)
    except UNAVAILABLE as exc:
        # Redis that does not answer is not asked again to undo now (that would only
        # wait again). A run recorded before its reply was lost is taken over by a
        # retry with the same Idempotency-Key once the claim is abandoned; without a
        # key, nobody will ask for it: it is deleted once Redis answers again.
        if not isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            undo_run(run_id, idem)
        elif idem is None:
            undo_later(svc.store, run_id)
        raise BackendUnavailable(f"could not record the run: {exc}") from None
    try:
        # The claim becomes final before the run is sent: a request that took the key
        # over meanwhile wins, and this run, never sent, is undone.
        holder = None if idem is None else confirm_idempotency_key(idem, run_id, req)
        if holder is None:
            svc.celery.send_task(RUN_SCENARIO, args=[run_id])
    except UNAVAILABLE as exc:
        undo_run(run_id, idem)
        raise BackendUnavailable(f"could not enqueue the run: {exc}") from None
    if holder is not None:
        undo_run(run_id, None)
        return replay(holder)
    # Only a run that exists is announced to the all-runs stream.
    svc.store.publish_all(created.events)
    svc.metrics.runs_submitted.labels(scenario.scenario_id).inc()
    # The run as created: a worker may have started it already, but this answers the POST.
    answer = created.summary | token_field(run_id)
    return jsonify(answer), 202, {"Location": f"/api/runs/{run_id}"}


def replay(previous: str) -> tuple[Response, int, dict[str, str]]:
    """The answer to a request whose Idempotency-Key names an earlier run."""
    summary = services().store.summary(previous)
    if summary is None:
        raise Conflict("a request with this Idempotency-Key is still being processed")
    # A fresh run token: the first answer's may have been lost, or have expired.
    return jsonify(summary | token_field(previous)), 200, {"Location": f"/api/runs/{previous}"}


def request_digest(req: RunRequest) -> str:
    """The same request whatever its whitespace or key order: a hash of the parsed body."""
    canonical = json.dumps(req.model_dump(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Claim:
    """The value of an Idempotency-Key: whose body it is, for which run, and whether
    that run is recorded and sent (final) or still being made (pending)."""

    digest: str
    run_id: str
    pending: bool

    @classmethod
    def parse(cls, raw: str) -> Claim:
        digest, _, rest = raw.partition(":")
        run_id, _, mark = rest.partition(":")
        return cls(digest, run_id, mark == PENDING)

    def encode(self) -> str:
        return f"{self.digest}:{self.run_id}" + (f":{PENDING}" if self.pending else "")


def claim_idempotency_key(key: str, run_id: str, req: RunRequest) -> str | None:
    """Claim `key` for this request; returns the earlier run id when it was claimed.

    A claim is pending until its run is recorded and sent. One left pending longer
    than CLAIM_TIMEOUT_S was abandoned: if its run exists it is sent again and
    adopted, otherwise this request takes the key over. Each change is a
    compare-and-set on the key, so two requests never both own it. The claim's age
    comes from the key's TTL, that is from Redis' clock, never from this host's.
    """
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidRequest("Idempotency-Key must be 1-200 printable ASCII characters")
    svc = services()
    name = keys.idempotency(key)
    mine = Claim(request_digest(req), run_id, pending=True)
    while True:
        if svc.store.redis.set(name, mine.encode(), nx=True, ex=IDEMPOTENCY_TTL_S):
            return None
        with svc.store.redis.pipeline() as pipe:
            try:
                pipe.watch(name)  # type: ignore[no-untyped-call]
                raw = pipe.get(name)
                ttl_ms = pipe.pttl(name)
                if raw is None:
                    continue  # expired between the two calls: claim it again
                claim = Claim.parse(str(raw))
                if claim.digest != mine.digest:
                    raise Conflict("Idempotency-Key was already used with a different body")
                if claim.run_id == run_id:
                    return None  # our own SET, retried after its reply was lost
                age_s = IDEMPOTENCY_TTL_S - int(ttl_ms) / 1000
                if not claim.pending or age_s < CLAIM_TIMEOUT_S:
                    return claim.run_id
                if svc.store.exists(claim.run_id):
                    # Its claimant recorded the run and died before sending it. A
                    # second message for a run that was sent after all does nothing.
                    svc.celery.send_task(RUN_SCENARIO, args=[claim.run_id])
                    pipe.multi()
                    pipe.set(name, replace(claim, pending=False).encode(), keepttl=True)
                    pipe.execute()
                    return claim.run_id
                pipe.multi()
                pipe.set(name, mine.encode(), ex=IDEMPOTENCY_TTL_S)
                pipe.execute()
                return None
            except redis.WatchError:
                continue  # the key changed under us: look again


def confirm_idempotency_key(key: str, run_id: str, req: RunRequest) -> str | None:
    """Make this request's claim final now that its run is recorded.

    Returns None when the key is ours, or the run of the request that took it over
    while this one was too slow (this run must then be undone, never sent).
    """
    name = keys.idempotency(key)
    with services().store.redis.pipeline() as pipe:
        while True:
            try:
                pipe.watch(name)  # type: ignore[no-untyped-call]
                raw = pipe.get(name)
                claim = None if raw is None else Claim.parse(str(raw))
                if claim is not None and claim.run_id != run_id:
                    return claim.run_id
                if claim is not None and not claim.pending:
                    return None  # adopted by a retry already
                pipe.multi()
                # Gone only if a request that had taken it over failed and released it.
                final = Claim(request_digest(req), run_id, pending=False)
                pipe.set(name, final.encode(), ex=IDEMPOTENCY_TTL_S)
                pipe.execute()
                return None
            except redis.WatchError:
                continue


def undo_run(run_id: str, idem: str | None) -> None:
    """Delete a run that was not sent, and release its Idempotency-Key if it holds it."""
    store = services().store
    try:
        store.delete_run(run_id)
        if idem is not None:
            name = keys.idempotency(idem)
            with store.redis.pipeline() as pipe:
                pipe.watch(name)  # type: ignore[no-untyped-call]
                raw = pipe.get(name)
                # Only our own claim: one taken over by another request stays.
                if raw is not None and Claim.parse(str(raw)).run_id == run_id:
                    pipe.multi()
                    pipe.delete(name)
                    pipe.execute()
    except UNAVAILABLE:
        pass  # Redis itself is away: a claim left pending is taken over in time.


#: How long a web process keeps trying to delete a run it answered 503 for.
UNDO_FOR_S = 600.0


def undo_later(store: RunStore, run_id: str) -> None:
    """Delete, once Redis answers again, a run that may have been recorded before the
    request answered 503: its client was told nothing was created, and the sweeper
    would otherwise start it (its start is owed). One that a worker started meanwhile is
    left to run: deleting it mid-run would be worse."""

    def undo() -> None:
        deadline = time.monotonic() + UNDO_FOR_S
        while True:
            try:
                if store.redis.hget(keys.run(run_id), "status") == RunStatus.QUEUED:
                    store.delete_run(run_id)
                    log.warning("run %s deleted: its request was answered 503", run_id)
                return
            except UNAVAILABLE:
                if time.monotonic() > deadline:
                    log.error("run %s may have been recorded though answered 503", run_id)
                    return
                time.sleep(1.0)  # Redis is still away: try again in a moment

    threading.Thread(target=undo, name="stepstream-undo", daemon=True).start()


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
    store = services().store
    if before is not None and store.index_score(before) is None:
        raise InvalidRequest("before must be the run_id of a listed run (see next_before)")
    runs, next_before = store.list_runs(
        status=status,
        scenario_id=scenario_id,
        limit=limit,
        before=before,
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
            svc.celery.send_task(
                ENFORCE_CANCEL, args=[run_id], countdown=svc.settings.cancel_grace_s
            )
        except (OperationalError, OSError) as exc:
            # The cancel stands; the run still ends when its running steps return.
            log.warning("could not schedule the end of cancelled run %s: %s", run_id, exc)
    return jsonify(svc.store.summary(run_id)), 202


@bp.get("/runs/<run_id>")
def get_run(run_id: str) -> Response:
    snapshot = services().store.snapshot(run_id)
    if snapshot is None:
        raise NotFound(f"unknown run {run_id!r}")
    return jsonify(snapshot)


def cursor_arg() -> str:
    """The start point of a stream read: `Last-Event-ID`, else `after`, else the start.

    The header wins: an EventSource reconnecting sends it with the URL it was opened
    with, whose `after` is where it began, not where it is.
    """
    after = request.headers.get("Last-Event-ID") or None
    if after is None:
        after = request.args.get("after")
    if after is None or after == "":
        return "0"
    if not is_stream_id(after):
        raise InvalidRequest(f"bad cursor {after!r}: expected a stream id like 1700000000000-0")
    return canonical_id(after)


def require_run(run_id: str) -> None:
    if not services().store.exists(run_id):
        raise NotFound(f"unknown run {run_id!r}")


class CursorExpired(StepstreamError):
    """The events right after a cursor were trimmed away (`STEPSTREAM_EVENT_MAXLEN`)."""

    code = "cursor_expired"


errors.STATUS[CursorExpired] = 410

#: Response header of a read from the beginning of a trimmed stream: how many events
#: were dropped before the first one it returns.
TRIMMED_HEADER = "Stepstream-Trimmed"


def judge_cursor(run_id: str, after: str, exists: bool, retained: Retained) -> CursorPlace:
    """Refuse a cursor no read can honour; otherwise say where it stands.

    404 for an unknown run; 400 for an id beyond the stream's last event (no event can
    follow it: reading would wait for ever, and it must never become anyone's read
    position); 410 for an id older than the first event kept after trimming (reading
    on would skip events without a word: the client reloads the run instead and
    resumes from its `last_event_id`). Returns `ok` or `finished` (at `run_finished`).
    """
    if not exists:
        raise NotFound(f"unknown run {run_id!r}")
    place = retained.place(after)
    if place == "beyond":
        raise InvalidRequest(
            f"bad cursor {after!r}: beyond the last event of the run",
            {"last_id": retained.last_id},
        )
    if place == "trimmed":
        raise CursorExpired(
            f"cursor {after!r} is older than the first event kept: the events after it "
            "were trimmed; reload the run (GET /api/runs/<run_id>) and resume from its "
            "last_event_id",
            {"first_id": retained.first_id, "first_seq": retained.first_seq},
        )
    return place


def trimmed_headers(after: str, retained: Retained) -> dict[str, str]:
    """A read from the beginning of a trimmed stream says how much it lacks."""
    if after in ("0", "0-0") and retained.trimmed:
        return {TRIMMED_HEADER: str(retained.first_seq - 1)}
    return {}


def events_page(run_id: str) -> Response:
    after = cursor_arg()
    limit = limit_arg(100, 1000)
    exists, retained, events = read_retained(services().store.redis, run_id, (after, limit))
    judge_cursor(run_id, after, exists, retained)
    response = jsonify(
        {
            "events": [e.to_dict() for e in events],
            "next_after": events[-1].id if events else None,
        }
    )
    response.headers.update(trimmed_headers(after, retained))
    return response


@bp.get("/scenarios")
def list_scenarios() -> Response:
    return jsonify([s.summary() for s in services().catalog.list()])


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
    svc = services()
    python = [t.summary() for t in svc.tools.list()]
    mcp = svc.mcp.summaries(shadowed=svc.tools)
    return jsonify(sorted(python + mcp, key=lambda t: str(t["name"])))


@bp.post("/tools/refresh")
def refresh_tools() -> tuple[Response, int]:
    """List the MCP servers' tools again, in the background: GET /api/tools shows it."""
    mcp = services().mcp
    if not mcp.enabled:
        return jsonify({"status": "no MCP servers configured"}), 202
    mcp.request_refresh()
    return jsonify({"status": "refreshing"}), 202
