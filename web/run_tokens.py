"""Run tokens (SPEC §14): `stream_token` in the answer to `POST /api/runs`.

A run token grants read access to one run only (its snapshot, events page, SSE and
WebSocket) until it expires, so that a back end can hand a browser one run without
its API token. It is an itsdangerous timed signature over the run id, signed with
`STEPSTREAM_SECRET_KEY` or, without one, with a key derived from the API token: every
web process of a deployment shares the key, so a token issued by one is honoured by
all, and changing the key (or the API token it comes from) revokes every token.

The key is derived with PBKDF2 rather than used as is: a run token is meant to be handed
out, and must not let its holder test guesses of a short API token quickly offline.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from tasks.config import Settings

#: Separates run tokens from anything else ever signed with the same key.
SALT = "stepstream.run-token.v1"
#: Where `create_app` keeps the app's RunTokens (None when none are issued).
EXTENSION = "stepstream.run_tokens"
#: PBKDF2 rounds turning the API token into a signing key (once per process).
KDF_ROUNDS = 200_000


class RunTokenExpired(Exception):
    """A genuine run token whose time is up."""


@functools.lru_cache(maxsize=8)
def _derived_key(api_token: str) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", api_token.encode(), SALT.encode(), KDF_ROUNDS)


@dataclass(frozen=True)
class RunTokens:
    """Issues and checks the run tokens of one deployment."""

    serializer: URLSafeTimedSerializer
    ttl_s: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RunTokens | None:
        """None when there is nothing to sign with (no secret key, no API token): the API
        is then open, and no `stream_token` is handed out."""
        if settings.run_token_ttl_s < 1:
            raise ValueError("STEPSTREAM_RUN_TOKEN_TTL_S must be at least 1")
        if settings.secret_key:
            key: str | bytes = settings.secret_key
        elif settings.api_token:
            key = _derived_key(settings.api_token)
        else:
            return None
        serializer = URLSafeTimedSerializer(
            key,
            salt=SALT,
            signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256},
        )
        return cls(serializer, settings.run_token_ttl_s)

    def issue(self, run_id: str) -> str:
        return str(self.serializer.dumps({"run": run_id}))

    def run_of(self, token: str) -> str | None:
        """The run a token grants, or None when it is not a run token of this deployment
        (forged, altered, signed with another key). Raises RunTokenExpired when it is one
        whose time is up."""
        try:
            payload = self.serializer.loads(token, max_age=self.ttl_s)
        except SignatureExpired:
            raise RunTokenExpired from None
        except BadSignature:
            return None
        run_id = payload.get("run") if isinstance(payload, dict) else None
        return run_id if isinstance(run_id, str) else None


def run_tokens() -> RunTokens | None:
    """The current app's run tokens; None when the deployment issues none."""
    tokens: RunTokens | None = current_app.extensions.get(EXTENSION)
    return tokens


def token_field(run_id: str) -> dict[str, str]:
    """`{"stream_token": ...}` for an answer naming `run_id`, or nothing without a key."""
    tokens = run_tokens()
    return {} if tokens is None else {"stream_token": tokens.issue(run_id)}
