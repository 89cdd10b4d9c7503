"""Idempotency keys of `POST /api/runs` and `POST /api/runs/batch` (SPEC §6, §15), kept
in Redis.

A key's value says whose request body it is (a digest), for which run (for a batch, its
runs' ids joined by commas), and whether that run is recorded and sent (final) or still
being made (pending). Every change is a
compare-and-set on the key (WATCH), so two requests never both own it; a claim's age
comes from the key's TTL, that is from Redis' clock, never from a host's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import redis

from . import keys
from .errors import Conflict
from .redis_client import WatchError, backend_errors

#: The same Idempotency-Key is remembered this long.
IDEMPOTENCY_TTL_S = 24 * 3600
#: A key claimed by a request whose run is not recorded this long after the claim was
#: abandoned (its process died, or gave up when Redis went away): another request with
#: the same key and body may take it over.
CLAIM_TIMEOUT_S = 60.0
#: Marks a claim whose run is not yet recorded and sent.
PENDING = "pending"


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


class IdempotencyKeys:
    """Claims of Idempotency-Keys; every failure of Redis is `BackendUnavailable`."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @backend_errors
    def claim(
        self, key: str, digest: str, run_id: str, resend: Callable[[str], None]
    ) -> str | None:
        """Claim `key` for the request with body `digest` and run `run_id` (a batch's
        runs: their ids joined by commas); returns the
        earlier run when it was claimed already (Conflict when for another body).

        A claim is pending until its run is recorded and sent. One left pending longer
        than CLAIM_TIMEOUT_S was abandoned: if its run exists, `resend` is given it
        (to send it again) and it is adopted; otherwise this request takes the key over.
        """
        name = keys.idempotency(key)
        mine = Claim(digest, run_id, pending=True)
        while True:
            if self._redis.set(name, mine.encode(), nx=True, ex=IDEMPOTENCY_TTL_S):
                return None
            with self._redis.pipeline() as pipe:
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
                    if self._redis.exists(*(keys.run(r) for r in claim.run_id.split(","))):
                        # Its claimant recorded the run (or the batch) and died before
                        # sending it. What is sent again for a run that was sent after
                        # all does nothing.
                        resend(claim.run_id)
                        pipe.multi()
                        pipe.set(name, replace(claim, pending=False).encode(), keepttl=True)
                        pipe.execute()
                        return claim.run_id
                    pipe.multi()
                    pipe.set(name, mine.encode(), ex=IDEMPOTENCY_TTL_S)
                    pipe.execute()
                    return None
                except WatchError:
                    continue  # the key changed under us: look again

    @backend_errors
    def confirm(self, key: str, digest: str, run_id: str) -> str | None:
        """Make the claim of run `run_id` final now that its run is recorded.

        Returns None when the key is its, or the run of the request that took it over
        meanwhile (run `run_id` must then be undone, never sent).
        """
        name = keys.idempotency(key)
        with self._redis.pipeline() as pipe:
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
                    final = Claim(digest, run_id, pending=False)
                    pipe.set(name, final.encode(), ex=IDEMPOTENCY_TTL_S)
                    pipe.execute()
                    return None
                except WatchError:
                    continue

    @backend_errors
    def release(self, key: str, run_id: str) -> None:
        """Free `key` if run `run_id` holds it: one taken over by another request stays."""
        name = keys.idempotency(key)
        with self._redis.pipeline() as pipe:
            try:
                pipe.watch(name)  # type: ignore[no-untyped-call]
                raw = pipe.get(name)
                if raw is not None and Claim.parse(str(raw)).run_id == run_id:
                    pipe.multi()
                    pipe.delete(name)
                    pipe.execute()
            except WatchError:
                pass  # it changed meanwhile: another request took it over, and keeps it
