"""Redis must keep every key stepstream writes until stepstream deletes or expires it.

Under any `maxmemory-policy` but `noeviction`, a Redis that reaches `maxmemory` drops
keys of its choosing: a run whose steps hash goes is left `running` with nothing to
resume it from. With `noeviction` a full Redis refuses writes instead, which the API
answers with 503 and workers retry. The web and every worker check it when they start.
"""

from __future__ import annotations

import logging

from . import redis_client

log = logging.getLogger(__name__)

#: The only policy under which Redis never drops a key on its own.
REQUIRED = "noeviction"


def check_eviction_policy(redis_url: str, who: str) -> str | None:
    """Warn unless Redis' `maxmemory-policy` is `noeviction`; return the policy.

    Never raises: a managed Redis may refuse CONFIG (and Redis may be away at start),
    in which case the warning says the policy could not be checked and None is returned.
    """
    # One quick try: a start-up check is no reason to wait out an outage.
    client = redis_client.connect(redis_url, retry_s=0, client_name="stepstream-check")
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    except redis_client.UNAVAILABLE as exc:
        policy, reason = None, str(exc)
    else:
        reason = "CONFIG GET does not tell it"
    finally:
        client.close()
    if policy is None:
        log.warning(
            "%s could not check Redis' maxmemory-policy (%s): make sure it is %s, or "
            "a full Redis may evict a run's keys and leave the run running for ever",
            who,
            reason,
            REQUIRED,
        )
        return None
    if policy != REQUIRED:
        log.warning(
            "Redis' maxmemory-policy is %s, not %s: a full Redis may evict a run's keys "
            "and leave the run running for ever (checked by %s); "
            "set `maxmemory-policy noeviction`",
            policy,
            REQUIRED,
            who,
        )
    return str(policy)
