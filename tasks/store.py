"""The run store: run and step state in Redis, changed only through the run scripts.

Each state change and the event that reports it are one Lua call (`lua/*.lua`), so a
snapshot and the stream never disagree. Reads that must be consistent with each other
(the run hash and its steps) are taken in one MULTI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast

import redis

from . import keys, listing, redis_client
from .config import HARD_LIMIT_GRACE_S, Settings
from .dag import dependants
from .events import Event, first_id_after
from .feed import AllEventsFeed
from .kinds import kind_of
from .scenario import Scenario
from .statuses import RUN_STATUSES, RunStatus, ScriptOutcome, StepStatus
from .views import SUMMARY_FIELDS, RunSnapshot, RunSummary

#: The version of the listing and watch indexes this code keeps (see `reindex`).
INDEXES_VERSION = 2
#: How many old index entries each new run checks for expiry, so the index shrinks as
#: fast as it grows without any background job.
SWEEP_BATCH = 10


@dataclass(frozen=True)
class ReadyStep:
    """A step attempt that a script marked ready: the caller dispatches it."""

    step: str
    attempt: int
    timeout_s: float
    delay_s: float


@dataclass(frozen=True)
class SweepVerdict:
    """What the sweeper found of one entry of the watch indexes (see sweep_check.lua)."""

    verdict: str
    events: list[Event]
    attempt: int = 0
    timeout_s: float = 0.0


@dataclass(frozen=True)
class CreatedRun:
    summary: dict[str, Any]
    events: list[Event]


@dataclass(frozen=True)
class StepStart:
    """What a worker needs to run an attempt it has just been granted."""

    definition: dict[str, Any]
    run_input: Any
    outputs: dict[str, Any]
    events: list[Event]


@dataclass(frozen=True)
class Transition:
    """The result of a script that moves a run forward."""

    outcome: str
    events: list[Event]
    ready: list[ReadyStep]
    run_status: str = ""


def _load_script(name: str) -> str:
    lua = resources.files("tasks") / "lua"
    return (lua / "prelude.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


def _events(flat: list[str]) -> list[Event]:
    out = []
    for i in range(0, len(flat), 2):
        event = Event.decode(flat[i], flat[i + 1])
        if event is not None:
            out.append(event)
    return out


def _ready(flat: list[str]) -> list[ReadyStep]:
    return [
        ReadyStep(flat[i], int(flat[i + 1]), float(flat[i + 2]), float(flat[i + 3]))
        for i in range(0, len(flat), 4)
    ]


class RunStore:
    """Reads and changes runs. One instance per process; thread-safe like redis-py."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self.feed = AllEventsFeed(client, settings.event_maxlen)
        self._scripts = {
            name: client.register_script(_load_script(name))
            for name in (
                "create_run",
                "start_run",
                "start_step",
                "step_event",
                "finish_step",
                "continuation",
                "cancel_run",
                "enforce_cancel",
                "resume_step",
                "sweep_check",
                "reindex_run",
            )
        }

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        retry_s: float = 1.0,
        max_connections: int | None = None,
        client_name: str | None = None,
    ) -> RunStore:
        """A store whose calls ride out a Redis outage of up to `retry_s` seconds.

        Workers wait long (`STEPSTREAM_REDIS_RETRY_S`): a step's events must not be lost.
        The web waits briefly, so that a request answers 503 rather than hanging, and
        caps its connections (`max_connections`): callers beyond the cap wait their turn.
        Either way a Redis that stops answering fails a call after its read timeout.
        """
        client = redis_client.connect(
            settings.redis_url,
            retry_s=retry_s,
            max_connections=max_connections,
            client_name=client_name,
        )
        return cls(client, settings)

    def _run(self, script: str, run_id: str, *args: Any) -> Any:
        return self._scripts[script](keys=keys.run_keys(run_id), args=list(args))

    def publish_all(self, events: list[Event]) -> None:
        """Copy events to the all-runs stream, best effort and off the caller's path."""
        self.feed.put(events)

    # -- writes ---------------------------------------------------------------------

    def create_run(self, run_id: str, scenario: Scenario, run_input: Any) -> CreatedRun:
        """Store a queued run carrying its own copy of the scenario.

        Returns its summary as created and its `run_queued` event, which the caller
        announces with `publish_all` once the run is enqueued, so that a run undone
        never shows up there.
        """
        (created,) = self.create_runs([(run_id, scenario, run_input)])
        return created

    def create_runs(self, runs: Sequence[tuple[str, Scenario, Any]]) -> list[CreatedRun]:
        """Store many queued runs in one round trip; each as `create_run` does."""
        script = self._scripts["create_run"]
        built = [self._create_args(run_id, sc, run_input) for run_id, sc, run_input in runs]
        inputs = [input_json for _, input_json in built]
        if len(runs) == 1:
            # One run, one command (a pipeline first asks whether its scripts are loaded).
            replies = [script(keys=keys.run_keys(runs[0][0]), args=built[0][0])]
        else:
            pipe = self.redis.pipeline(transaction=False)
            for (run_id, _, _), (args, _) in zip(runs, built, strict=True):
                script(keys=keys.run_keys(run_id), args=args, client=pipe)
            replies = pipe.execute()
        created = []
        for (run_id, scenario, _), input_json, (_, emitted) in zip(
            runs, inputs, replies, strict=True
        ):
            events = _events(emitted)
            summary = RunSummary.from_hash(
                {
                    "run_id": run_id,
                    "scenario_id": scenario.scenario_id,
                    "status": RunStatus.QUEUED,
                    "input": input_json,
                    "created_at": events[0].data["ts"],
                }
            )
            assert summary is not None  # it has a run_id
            created.append(CreatedRun(summary.model_dump(), events))
        if replies:
            self._forget_older_than(int(replies[-1][0]))
        return created

    def _create_args(
        self, run_id: str, scenario: Scenario, run_input: Any
    ) -> tuple[list[Any], str]:
        """The arguments of create_run.lua for one run, and the run's input as JSON."""
        needs = {step.name: step.needs for step in scenario.steps}
        nexts = dependants(needs)
        fields: list[Any] = []
        for step in scenario.steps:
            kind = kind_of(step)
            timeout = step.timeout_s or self.settings.step_timeout_s
            for field, value in (
                ("status", StepStatus.PENDING),
                ("attempt", 0),
                ("waiting", len(step.needs)),
                ("kind", kind.name),
                *kind.stored_fields(step).items(),
                ("on_error", step.on_error),
                ("next", ",".join(nexts[step.name])),
                ("refs", ",".join(sorted(step.referenced_steps()))),
                ("timeout_s", timeout),
                ("max_attempts", step.retry.max_attempts),
                ("backoff_s", step.retry.backoff_s),
                ("backoff_factor", step.retry.backoff_factor),
                ("def", json.dumps(step.model_dump(mode="json"), allow_nan=False)),
                ("progress", 0),
                ("message", ""),
                ("root", 1 if not step.needs else 0),
            ):
                fields += [f"{step.name}.{field}", value]
        input_json = json.dumps(run_input, allow_nan=False)
        queued = f'"scenario_id":{json.dumps(scenario.scenario_id)},"input":{input_json}'
        args = [
            run_id,
            scenario.scenario_id,
            input_json,
            ",".join(step.name for step in scenario.steps),
            self.settings.event_maxlen,
            self.settings.run_ttl_s,
            queued,
            int(self.settings.redeliver_s * 1000),
            int((HARD_LIMIT_GRACE_S + self.settings.attempt_grace_s) * 1000),
            *fields,
        ]
        return args, input_json

    def _forget_older_than(self, created_us: int) -> None:
        # Runs created longer ago than the TTL may have expired: check a few of them, so
        # the indexes shrink as fast as they grow without any background job. (Scores
        # are microseconds, so that runs created in the same millisecond still list in
        # order; a double holds them exactly until the year 2255.)
        horizon = created_us - self.settings.run_ttl_s * 1_000_000
        old = cast(
            "list[str]",
            self.redis.zrangebyscore(keys.runs_index(), "-inf", horizon, start=0, num=SWEEP_BATCH),
        )
        if old:
            self.forget_expired(old)

    def forget_expired(self, run_ids: list[str]) -> None:
        """Drop from the indexes the runs whose keys have expired."""
        pipe = self.redis.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.exists(keys.run(run_id))
        gone = [r for r, alive in zip(run_ids, pipe.execute(), strict=True) if not alive]
        if gone:
            self._unindex(gone)

    def _unindex(self, run_ids: list[str]) -> None:
        scenarios = cast("list[str | None]", self.redis.hmget(keys.scenario_of(), run_ids))
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(keys.runs_index(), *run_ids)
        for status in RUN_STATUSES:
            pipe.zrem(keys.runs_by_status(status), *run_ids)
        for run_id, scenario_id in zip(run_ids, scenarios, strict=True):
            if scenario_id is None:
                continue
            pipe.zrem(keys.runs_by_scenario(scenario_id), run_id)
            for status in RUN_STATUSES:
                pipe.zrem(keys.runs_by_scenario(scenario_id, status), run_id)
        pipe.hdel(keys.scenario_of(), *run_ids)
        pipe.zrem(keys.owed_dispatches(), *run_ids)
        pipe.execute()

    def reindex(self, page: int = 500) -> int:
        """Put every run into the listing and watch indexes, once per Redis: runs created
        before those existed are listed by status and scenario, and their attempts in
        flight are watched like any other. Returns how many runs it looked at (0 when
        done before)."""
        if self.redis.exists(keys.indexes_version()):
            return 0
        seen = 0
        # ZSCAN returns every run present throughout, however the index changes meanwhile
        # (perhaps twice: reindexing is safe to repeat).
        batch: list[str] = []
        for run_id, _ in self.redis.zscan_iter(keys.runs_index(), count=page):
            batch.append(cast(str, run_id))
            if len(batch) == page:
                self._reindex_runs(batch)
                seen, batch = seen + len(batch), []
        self._reindex_runs(batch)
        self.redis.set(keys.indexes_version(), INDEXES_VERSION)
        return seen + len(batch)

    def reindex_legacy(self) -> int:
        """Index the unfinished runs that nodes of an earlier version keep in their own
        set, during a rolling upgrade: their new runs and new attempts are watched and
        listed like any other. Returns how many are still unfinished there."""
        run_ids = sorted(cast("set[str]", self.redis.smembers(keys.legacy_active_runs())))
        if not run_ids:
            return 0
        done = [
            run_id
            for run_id, verdict in zip(run_ids, self._reindex_runs(run_ids), strict=True)
            if verdict != ScriptOutcome.INDEXED
        ]
        if done:
            self.redis.srem(keys.legacy_active_runs(), *done)
        return len(run_ids) - len(done)

    def _reindex_runs(self, run_ids: list[str]) -> list[str]:
        pipe = self.redis.pipeline(transaction=False)
        for run_id in run_ids:
            self._scripts["reindex_run"](keys=keys.run_keys(run_id), args=[], client=pipe)
        return cast("list[str]", pipe.execute()) if run_ids else []

    def delete_run(self, run_id: str) -> None:
        """Undo a run that could not be enqueued, so nothing is left half-created."""
        self.redis.delete(*keys.run_keys(run_id))
        self._unindex([run_id])

    def start_run(self, run_id: str, worker: str) -> Transition:
        outcome, emitted, ready = self._run("start_run", run_id, worker)
        events = _events(emitted)
        self.publish_all(events)
        return Transition(outcome, events, _ready(ready))

    def start_step(
        self,
        run_id: str,
        step: str,
        attempt: int,
        worker: str,
        task_id: str = "",
        token: str = "",
        incarnation: str = "",
    ) -> StepStart | None:
        """Take attempt `attempt` of `step`; None if it is not ready (already taken).

        `token` names this execution: the same call repeated with it (a retry after a
        lost reply) is granted again instead of refused.
        """
        reply = self._run("start_step", run_id, step, attempt, worker, task_id, token, incarnation)
        if reply[0] != ScriptOutcome.STARTED:
            return None
        _, emitted, definition, run_input, outputs = reply
        events = _events(emitted)
        self.publish_all(events)
        return StepStart(
            definition=json.loads(definition),
            run_input=json.loads(run_input),
            outputs={outputs[i]: json.loads(outputs[i + 1]) for i in range(0, len(outputs), 2)},
            events=events,
        )

    def step_event(
        self,
        run_id: str,
        step: str,
        attempt: int,
        event_type: str,
        fields: Mapping[str, Any],
        progress: float | None = None,
        *,
        number: int,
    ) -> list[Event]:
        """Append one step_progress or step_log (see `step_events`)."""
        return self.step_events(run_id, step, attempt, [(event_type, fields, progress, number)])

    def step_events(
        self,
        run_id: str,
        step: str,
        attempt: int,
        batch: list[tuple[str, Mapping[str, Any], float | None, int]],
    ) -> list[Event]:
        """Append step_progress and step_log events, in order, in one call; nothing if
        the attempt is no longer running.

        Each item is (type, fields, progress fraction or None, number): `number` counts
        the attempt's events from 1, and a number already recorded is a repeat of a
        call whose reply was lost, not appended again.
        """
        args: list[Any] = []
        for event_type, fields, progress, number in batch:
            fragment = json.dumps(
                {"step": step, "attempt": attempt, **fields},
                allow_nan=False,
            )[1:-1]
            args += [
                event_type,
                fragment,
                "" if progress is None else repr(progress),
                str(fields.get("message", "")),
                number,
            ]
        emitted = self._run("step_event", run_id, step, attempt, *args)
        events = _events(emitted)
        self.publish_all(events)
        return events

    def finish_step(
        self, run_id: str, step: str, attempt: int, status: str, message: str, output_json: str
    ) -> Transition:
        """Record how an attempt ended; returns the steps (or the retry) it made ready.

        `status` is succeeded, failed or cancelled; whether a failure is retried is the
        script's decision, from the step's policy and whether the run is being cancelled.
        """
        if status != StepStatus.SUCCEEDED:
            output_json = ""
        if len(output_json) > self.settings.event_output_bytes:
            fragment = '"output_truncated":true'
        else:
            fragment = '"output":' + (output_json or "null")
        outcome, emitted, ready, run_status = self._run(
            "finish_step", run_id, step, attempt, status, message, output_json, fragment
        )
        return self._transition(run_id, outcome, emitted, ready, run_status)

    def resume_step(
        self,
        run_id: str,
        step: str,
        attempt: int,
        reason: str,
        *,
        task_id: str = "",
        holder: str = "",
    ) -> Transition:
        """Hand a running attempt whose execution is gone to a new attempt (see the script)."""
        outcome, emitted, ready, run_status = self._run(
            "resume_step",
            run_id,
            step,
            attempt,
            reason,
            self.settings.max_resumes,
            task_id,
            holder,
        )
        return self._transition(run_id, outcome, emitted, ready, run_status)

    def _transition(
        self, run_id: str, outcome: str, emitted: list[str], ready: list[str], run_status: str
    ) -> Transition:
        events = _events(emitted)
        self.publish_all(events)
        return Transition(outcome, events, _ready(ready), run_status)

    def cancel_run(self, run_id: str) -> Transition:
        """Cancel a run; `ready` is empty, `outcome` says what happened (see the script)."""
        outcome, emitted = self._run("cancel_run", run_id)
        cancelled = outcome == ScriptOutcome.CANCELLED
        return self._transition(
            run_id, outcome, emitted, [], RunStatus.CANCELLED if cancelled else ""
        )

    def enforce_cancel(self, run_id: str) -> list[str]:
        """End a cancelled run whose steps outlived the grace; returns their task ids."""
        emitted, task_ids = self._run("enforce_cancel", run_id)
        self._transition(run_id, "", emitted, [], RunStatus.CANCELLED if emitted else "")
        return [t for t in task_ids if t]

    def continuation(self, run_id: str, step: str, attempt: int) -> list[ReadyStep]:
        """What a duplicate of this attempt's message must still dispatch (see the script)."""
        return _ready(self._run("continuation", run_id, step, attempt))

    def sweep_check(
        self, run_id: str, index: str, entry: str, step: str = "", attempt: int | None = None
    ) -> SweepVerdict:
        """Whether an entry of a watch index is still owed (see sweep_check.lua)."""
        verdict, emitted, current, timeout = self._run(
            "sweep_check", run_id, index, entry, step, "" if attempt is None else attempt
        )
        events = _events(emitted)
        self.publish_all(events)
        return SweepVerdict(verdict, events, int(current or 0), float(timeout or 0))

    def cancel_requested(self, run_id: str) -> bool:
        return self.redis.hget(keys.run(run_id), "cancel_requested") is not None

    # -- reads ----------------------------------------------------------------------

    def exists(self, run_id: str) -> bool:
        return bool(self.redis.exists(keys.run(run_id)))

    def summary(self, run_id: str) -> dict[str, Any] | None:
        """The run's summary as the API sends it (see `views.RunSummary`)."""
        values = cast("list[str | None]", self.redis.hmget(keys.run(run_id), SUMMARY_FIELDS))
        summary = RunSummary.from_hash(dict(zip(SUMMARY_FIELDS, values, strict=True)))
        return None if summary is None else summary.model_dump()

    def snapshot(self, run_id: str) -> dict[str, Any] | None:
        """The run with its steps, consistent with the stream up to `last_event_id`, as
        the API sends it (see `views.RunSnapshot`)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(keys.run(run_id))
        pipe.hgetall(keys.run_steps(run_id))
        run, steps = pipe.execute()
        snapshot = RunSnapshot.from_hashes(run, steps)
        return None if snapshot is None else snapshot.model_dump()

    def list_runs(
        self,
        *,
        status: str | None = None,
        scenario_id: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first, without inputs; the page and the `before` cursor of the next one."""
        return listing.list_runs(
            self.redis,
            self._unindex,
            status=status,
            scenario_id=scenario_id,
            limit=limit,
            before=before,
        )

    def index_score(self, run_id: str) -> float | None:
        return self.redis.zscore(keys.runs_index(), run_id)

    def read_events(self, run_id: str, after: str, count: int) -> list[Event]:
        """Events strictly after stream id `after` ("0" for the beginning)."""
        start = first_id_after(after)
        if start is None:
            return []
        entries = cast(
            "list[tuple[str, dict[str, str]]]",
            self.redis.xrange(keys.run_events(run_id), min=start, max="+", count=count),
        )
        return [e for e in (Event.decode(i, f.get("data", "")) for i, f in entries) if e]
