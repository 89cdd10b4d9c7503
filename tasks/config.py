"""Settings, read from the environment once at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .egress import parse_allow


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _list(env: Mapping[str, str], name: str, strip: str = "") -> tuple[str, ...]:
    """A comma-separated variable as lowercased items, without empty ones."""
    items = (item.strip().lower().rstrip(strip) for item in env.get(name, "").split(","))
    return tuple(item for item in items if item)


#: Seconds past a step's soft time limit before Celery kills its process (the hard limit).
HARD_LIMIT_GRACE_S = 10


@dataclass(frozen=True)
class Settings:
    """Every `STEPSTREAM_*` variable of SPEC §9, with its default."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    broker_url: str = "redis://127.0.0.1:6379/0"
    scenarios_dir: Path = Path("scenarios")
    api_token: str | None = None
    #: `Host` names the web answers (SPEC §14), lowercased; `*`: any. The address a
    #: connection comes in on is answered too.
    allowed_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
    #: Origins, besides the web's own, whose pages may POST or open a WebSocket; `*`: any.
    allowed_origins: tuple[str, ...] = field(default_factory=tuple)
    event_maxlen: int = 100_000
    run_ttl_s: int = 604_800
    max_body_bytes: int = 1_048_576
    heartbeat_s: float = 10.0
    expected_workers: tuple[str, ...] = field(default_factory=tuple)
    max_resumes: int = 2
    shutdown_grace_s: float = 30.0
    step_timeout_s: float = 300.0
    #: After a cancel, running steps have this long to notice `ctx.cancelled`.
    cancel_grace_s: float = 5.0
    #: Largest step output accepted, as bytes of JSON.
    max_output_bytes: int = 1_048_576
    #: Outputs larger than this are left out of `step_finished` events.
    event_output_bytes: int = 16_384
    #: How long a worker keeps retrying a write while Redis is unreachable.
    redis_retry_s: float = 60.0
    #: After this long the broker hands out again a message whose worker never
    #: acknowledged it (a lost node's): the backstop for anything such a node held.
    #: A dispatch owed this long (a queued run or a ready step nobody started) is sent
    #: again by the sweeper.
    redeliver_s: float = 300.0
    #: How long past its hard time limit an attempt may still be recorded as running
    #: before the sweeper ends it, whatever the health of its worker.
    attempt_grace_s: float = 30.0
    #: Events a streaming client may fall behind before it is cut off (1013).
    stream_queue: int = 10_000
    #: Bytes of event JSON a streaming client may fall behind before it is cut off.
    stream_queue_bytes: int = 16 * 1024 * 1024
    #: The Celery queue of steps that name none (SPEC §13.1): stepstream's own, so that
    #: another Celery app on the same broker never takes its messages (and drops them).
    queue: str = "stepstream"
    #: Where the browser UI links to Flower; "" means port 5555 of the page's host.
    flower_url: str = ""
    #: Host names, IPs and CIDRs `http_request` may reach although they are not public
    #: (tasks/egress/); normalised, and checked when the settings are read.
    http_allow: tuple[str, ...] = field(default_factory=tuple)
    #: The file listing MCP servers whose tools steps may call; None: no MCP tools.
    mcp_config: Path | None = None
    #: How often the web asks the MCP servers for their tools again.
    mcp_refresh_s: float = 60.0
    #: Signs run tokens (`stream_token`); None: a key derived from `api_token`.
    secret_key: str | None = field(default=None, repr=False)
    #: How long a run token (`stream_token`) grants read access to its run.
    run_token_ttl_s: int = 3600

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        redis_url = env.get("STEPSTREAM_REDIS_URL") or cls.redis_url
        expected = env.get("STEPSTREAM_EXPECTED_WORKERS", "")
        return cls(
            redis_url=redis_url,
            broker_url=env.get("STEPSTREAM_BROKER_URL") or redis_url,
            scenarios_dir=Path(env.get("STEPSTREAM_SCENARIOS_DIR") or "scenarios"),
            api_token=env.get("STEPSTREAM_API_TOKEN") or None,
            allowed_hosts=_list(env, "STEPSTREAM_ALLOWED_HOSTS") or cls.allowed_hosts,
            allowed_origins=_list(env, "STEPSTREAM_ALLOWED_ORIGINS", strip="/"),
            event_maxlen=_int(env, "STEPSTREAM_EVENT_MAXLEN", cls.event_maxlen),
            run_ttl_s=_int(env, "STEPSTREAM_RUN_TTL_S", cls.run_ttl_s),
            max_body_bytes=_int(env, "STEPSTREAM_MAX_BODY_BYTES", cls.max_body_bytes),
            heartbeat_s=_float(env, "STEPSTREAM_HEARTBEAT_S", cls.heartbeat_s),
            expected_workers=tuple(w.strip() for w in expected.split(",") if w.strip()),
            max_resumes=_int(env, "STEPSTREAM_MAX_RESUMES", cls.max_resumes),
            shutdown_grace_s=_float(env, "STEPSTREAM_SHUTDOWN_GRACE_S", cls.shutdown_grace_s),
            step_timeout_s=_float(env, "STEPSTREAM_STEP_TIMEOUT_S", cls.step_timeout_s),
            cancel_grace_s=_float(env, "STEPSTREAM_CANCEL_GRACE_S", cls.cancel_grace_s),
            max_output_bytes=_int(env, "STEPSTREAM_MAX_OUTPUT_BYTES", cls.max_output_bytes),
            redis_retry_s=_float(env, "STEPSTREAM_REDIS_RETRY_S", cls.redis_retry_s),
            redeliver_s=_float(env, "STEPSTREAM_REDELIVER_S", cls.redeliver_s),
            attempt_grace_s=_float(env, "STEPSTREAM_ATTEMPT_GRACE_S", cls.attempt_grace_s),
            queue=env.get("STEPSTREAM_QUEUE") or cls.queue,
            flower_url=env.get("STEPSTREAM_FLOWER_URL", ""),
            http_allow=parse_allow(env.get("STEPSTREAM_HTTP_ALLOW", "")),
            stream_queue=_int(env, "STEPSTREAM_STREAM_QUEUE", cls.stream_queue),
            stream_queue_bytes=_int(env, "STEPSTREAM_STREAM_QUEUE_BYTES", cls.stream_queue_bytes),
            mcp_config=Path(env["STEPSTREAM_MCP_CONFIG"])
            if env.get("STEPSTREAM_MCP_CONFIG")
            else None,
            mcp_refresh_s=_float(env, "STEPSTREAM_MCP_REFRESH_S", cls.mcp_refresh_s),
            secret_key=env.get("STEPSTREAM_SECRET_KEY") or None,
            run_token_ttl_s=_int(env, "STEPSTREAM_RUN_TOKEN_TTL_S", cls.run_token_ttl_s),
        )
