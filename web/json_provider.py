"""The app's JSON provider: every response is strict JSON (SPEC §14).

Flask's default writes `NaN` and `Infinity` as bare words, which no JSON parser (and
no browser) reads. Here nothing can: a response holding a value strict JSON cannot
carry is logged, naming where the value is, and sent with that value replaced (a
number that is not finite by null, as JavaScript's JSON.stringify does; a lone
surrogate by U+FFFD). Such values can only come from data stored before the API
refused them, and one old run must not break a listing for everyone.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from flask import has_request_context, request
from flask.json.provider import DefaultJSONProvider

from tasks import strict_json

if TYPE_CHECKING:
    from werkzeug.sansio.response import Response

log = logging.getLogger(__name__)


class StrictJSONProvider(DefaultJSONProvider):
    #: Keys keep the order the code gives them (the documented field order).
    sort_keys = False
    #: U+2028, U+2029 and the like are escaped, never sent raw.
    ensure_ascii = True

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """Strict JSON, or NotStrictJSON naming the value that cannot be written."""
        kwargs.setdefault("default", self.default)
        kwargs.setdefault("sort_keys", self.sort_keys)
        return strict_json.dumps(obj, **kwargs)

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Strict parsing for `request.get_json()` too: a refusal is a ValueError,
        which Flask answers with 400."""
        return strict_json.loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        dump_args: dict[str, Any] = {}
        if (self.compact is None and self._app.debug) or self.compact is False:
            dump_args["indent"] = 2
        else:
            dump_args["separators"] = (",", ":")
        try:
            text = self.dumps(obj, **dump_args)
        except strict_json.NotStrictJSON as exc:
            where = f"{request.method} {request.path}" if has_request_context() else "a response"
            log.warning("%s: a value JSON cannot carry was replaced: %s", where, exc)
            text = self.dumps(strict_json.sanitized(obj), **dump_args)
        return self._app.response_class(f"{text}\n", mimetype=self.mimetype)
