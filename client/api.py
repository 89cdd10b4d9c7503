"""The HTTP API of a stepstream server (SPEC §6) as Python calls, for the command line
and any program: no Flask, no Celery, no Redis.

    with Api("http://127.0.0.1:8000", token=None) as api:
        run = api.submit("hello_sequence", {"name": "Ada"})
        for event in api.follow(run["run_id"], run_token=run.get("stream_token")):
            print(event["seq"], event["type"])

Errors raise `ApiError` (the server's answer: status, code, message, details) or
`Unreachable`; answers are JSON made safe to print (`sanitized`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Self, cast

import httpx

from tasks.strict_json import sanitized

from .errors import ApiError, Unreachable
from .follow import Follower
from .streams import Transport

Json = dict[str, Any]
#: The most runs one `POST /api/runs/batch` takes (SPEC §15).
BATCH_MAX = 1000


class Api:
    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    # -- any route ---------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The raw answer to one request; `Unreachable` when there is none."""
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unreachable(f"cannot reach {self.http.base_url}: {exc}") from None

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer to one request; `ApiError` for an error status."""
        response = self.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiError.from_body(response.status_code, response.content)
        return sanitized(response.json())

    # -- runs --------------------------------------------------------------------------

    def submit(
        self,
        scenario_id: str,
        run_input: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Json:
        """Start a run: its summary (with `stream_token` when the server signs them)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = {"scenario_id": scenario_id, "input": dict(run_input or {})}
        return cast(Json, self.call("POST", "/api/runs", json=body, headers=headers))

    def submit_batch(
        self,
        entries: Sequence[tuple[str, Mapping[str, Any]] | Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
    ) -> list[Json]:
        """Start many runs in one request (`POST /api/runs/batch`, at most `BATCH_MAX`):
        their summaries, in order. Each entry is `(scenario_id, input)` or a mapping
        `{"scenario_id", "input"}`. One invalid entry fails the whole batch (an
        `ApiError` 422 whose details name each error's entry by `index`)."""
        runs = [
            {"scenario_id": e[0], "input": dict(e[1])}
            if isinstance(e, tuple)
            else {"scenario_id": e["scenario_id"], "input": dict(e.get("input") or {})}
            for e in entries
        ]
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        answer = self.call("POST", "/api/runs/batch", json={"runs": runs}, headers=headers)
        return cast(list[Json], answer["runs"])

    def run(self, run_id: str) -> Json:
        """The run's snapshot: status, steps and `last_event_id`."""
        return cast(Json, self.call("GET", f"/api/runs/{run_id}"))

    def runs(
        self,
        *,
        status: str | None = None,
        scenario_id: str | None = None,
        limit: int | None = None,
        before: str | None = None,
    ) -> Json:
        """A page of runs, newest first: `{"runs": [...], "next_before": ...}`."""
        wanted = {"status": status, "scenario_id": scenario_id, "limit": limit, "before": before}
        params = {k: v for k, v in wanted.items() if v is not None and v != ""}
        return cast(Json, self.call("GET", "/api/runs", params=params))

    def cancel(self, run_id: str) -> Json:
        return cast(Json, self.call("POST", f"/api/runs/{run_id}/cancel"))

    def events_page(self, run_id: str, after: str | None = None, limit: int | None = None) -> Json:
        """Stored events after a cursor, without waiting: `{"events", "next_after"}`."""
        params = {k: v for k, v in (("after", after), ("limit", limit)) if v is not None}
        headers = {"Accept": "application/json"}
        return cast(
            Json, self.call("GET", f"/api/runs/{run_id}/events", params=params, headers=headers)
        )

    def follow(
        self,
        run_id: str,
        *,
        after: str | None = None,
        transport: Transport = "sse",
        run_token: str | None = None,
        **options: Any,
    ) -> Follower:
        """The run's events to its end, each once, resuming across dropped connections
        (`client.follow.Follower`; `options` go to it)."""
        return Follower(
            self.url,
            run_id,
            transport,
            after=after,
            token=self.token,
            run_token=run_token,
            http=self.http,
            **options,
        )

    # -- the catalog and the fleet -----------------------------------------------------

    def scenarios(self) -> list[Json]:
        return cast(list[Json], self.call("GET", "/api/scenarios"))

    def scenario_problems(self) -> list[Json]:
        """The scenario files the server left out, and why (`[]` from a server too old
        to say)."""
        try:
            return cast(list[Json], self.call("GET", "/api/scenarios/problems"))
        except ApiError as exc:
            if exc.status == 404:  # read as an unknown scenario called "problems"
                return []
            raise

    def scenario(self, scenario_id: str) -> Json:
        return cast(Json, self.call("GET", f"/api/scenarios/{scenario_id}"))

    def tools(self) -> list[Json]:
        return cast(list[Json], self.call("GET", "/api/tools"))

    def refresh_tools(self) -> None:
        """Ask the server to list its MCP servers again (in the background)."""
        self.call("POST", "/api/tools/refresh")

    def workers(self) -> list[Json]:
        return cast(list[Json], self.call("GET", "/api/workers"))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
