"""The project's exceptions: one root, with branches the HTTP API maps to statuses."""

from __future__ import annotations

from typing import Any


class StepstreamError(Exception):
    """Root of every error stepstream raises on purpose."""

    #: Machine-readable error code, used in API error bodies.
    code = "error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ScenarioError(StepstreamError):
    """A scenario file or definition is invalid."""

    code = "invalid_scenario"


class UnknownTool(StepstreamError):
    """A tool name is not registered."""

    code = "unknown_tool"


class ReferenceResolutionError(StepstreamError):
    """A `{from: ...}` reference points at something that does not exist."""

    code = "bad_reference"


class ToolFailure(StepstreamError):
    """A tool gave up: the step fails with this message (not logged as a crash)."""

    code = "tool_failed"


class StepCancelled(StepstreamError):
    """A tool stopped because its run is being cancelled (it saw `ctx.cancelled`)."""

    code = "cancelled"


class NotFound(StepstreamError):
    code = "not_found"


class Conflict(StepstreamError):
    code = "conflict"


class InvalidRequest(StepstreamError):
    code = "bad_request"


class InvalidInput(StepstreamError):
    """The run input fails the scenario's `input_schema`."""

    code = "invalid_input"


class BackendUnavailable(StepstreamError):
    """Redis or the broker cannot serve a request now (gone, not answering, loading,
    out of memory, read-only, busy): the API answers 503, workers retry or give up.

    Raised by the store, and by whatever sends Celery messages, in place of the client
    libraries' own errors (`redis_client.backend_errors` translates those), so no caller
    names a redis or kombu exception. `cause` is the low-level error translated, if any.
    """

    code = "unavailable"

    def __init__(
        self, message: str, details: Any = None, *, cause: BaseException | None = None
    ) -> None:
        super().__init__(message, details)
        self.cause = cause

    @classmethod
    def from_error(cls, exc: BaseException) -> BackendUnavailable:
        """The low-level error `exc` as this class (its message names the original)."""
        return cls(f"{type(exc).__name__}: {exc}", cause=exc)


class BackendUnreachable(BackendUnavailable):
    """The backend did not answer (refused, reset, timed out): a write may or may not
    have been applied, where other `BackendUnavailable`s were answered and changed
    nothing. Transient: trying again later may succeed."""
