"""Strict JSON (SPEC §14): what the API reads, and what it writes.

Python's `json` is lenient both ways. It reads `NaN` and `Infinity`, turns numbers too
large for a double (`1e400`) into infinity and writes them back as bare `Infinity`,
which is not JSON; it has no depth limit of its own, so a deeply nested body ends in a
RecursionError; and it lets lone surrogates (`"\\ud800"`) through, which are not
Unicode text and which most other parsers, and Redis' client, refuse. Here each of
these is refused with a reason a client can act on.

Integers are read exactly (Python's int has no limit) as long as a double could hold
them at all: a client whose parser uses doubles reads a rounded value beyond 2**53,
but a finite one, and the text round-trips unchanged through the store. Only integers
beyond the double range (about 1.8e308), which such a parser turns into infinity like
`1e400`, are refused.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from itertools import accumulate
from typing import Any

#: Deepest nesting of arrays and objects accepted in a body (`{}` is depth 1).
MAX_DEPTH = 64
#: Digits (and sign) beyond which an integer is out of the double range for sure.
_MAX_INT_CHARS = 310

#: A JSON string, escapes included (DOTALL: no character ends a match early), or what
#: is left of the text after an unterminated one. Every match succeeds where it starts,
#: so stripping strings is one linear pass whatever the text: a pattern that could fail
#: would be retried from every quote, which is quadratic.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_SURROGATE = re.compile("[\ud800-\udfff]")
#: One escape of JSON text as Python writes it: a surrogate pair, a lone surrogate
#: (group 3) or anything else (`\\\\` included, so an escaped backslash never starts one).
_ESCAPE = re.compile(r"\\(?:u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})|u(d[89a-f][0-9a-f]{2})|.)")


class NotStrictJSON(ValueError):
    """A value or a text that strict JSON cannot carry; `path` says where, if known."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(f"{message} at {path}" if path else message)
        self.message = message
        self.path = path


# -- reading -------------------------------------------------------------------------------


def loads(data: bytes | str) -> Any:
    """Parse JSON text, refusing what SPEC §14 refuses (see the module's docstring).

    Bytes must be UTF-8 (RFC 8259 §8.1). Raises NotStrictJSON, a ValueError.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotStrictJSON(f"not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    else:
        text = data
    check_depth(text)
    try:
        value = json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_double_int
        )
    except NotStrictJSON:
        raise
    except ValueError as exc:
        raise NotStrictJSON(f"not valid JSON: {exc}") from None
    # A lone surrogate can only come from a \u escape (raw ones are not UTF-8) or from
    # text handed in as a str; both are cheap to rule out before walking the value.
    if "\\u" in text or _SURROGATE.search(text):
        path = first_unencodable(value, numbers=False)
        if path is not None:
            raise NotStrictJSON("a string holds a lone surrogate, which is not Unicode text", path)
    return value


def depth(text: str) -> int:
    """How deeply the arrays and objects of JSON text nest, without parsing it.

    Brackets inside strings do not count. On text that is not JSON the answer is never
    below the depth a parser would reach before finding the error, which is what
    matters: the check runs before the parser recurses.
    """
    brackets = _BRACKET.findall(_STRING.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def check_depth(text: str) -> None:
    # Fewer opening brackets than the limit cannot nest beyond it: most bodies stop here.
    if text.count("[") + text.count("{") > MAX_DEPTH and depth(text) > MAX_DEPTH:
        raise NotStrictJSON(f"arrays and objects nest deeper than {MAX_DEPTH} levels")


def _refuse_constant(name: str) -> Any:
    raise NotStrictJSON(f"{name} is not a JSON value")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise NotStrictJSON(f"the number {_short(literal)} is beyond the range of a double")
    return value


def _double_int(literal: str) -> int:
    if len(literal) > _MAX_INT_CHARS:
        raise NotStrictJSON(f"the number {_short(literal)} is beyond the range of a double")
    value = int(literal)
    try:
        float(value)
    except OverflowError:
        raise NotStrictJSON(
            f"the number {_short(literal)} is beyond the range of a double"
        ) from None
    return value


def _short(literal: str) -> str:
    return (
        literal if len(literal) <= 24 else f"{literal[:10]}…{literal[-10:]} ({len(literal)} chars)"
    )


# -- writing -------------------------------------------------------------------------------


def dumps(value: Any, **kwargs: Any) -> str:
    """`json.dumps` that writes strict JSON or raises NotStrictJSON naming the value.

    Non-ASCII is always escaped (`ensure_ascii`), so U+2028, U+2029 and U+0085 never
    reach a reader raw.
    """
    kwargs.update(allow_nan=False, ensure_ascii=True)
    try:
        text = json.dumps(value, **kwargs)
    except ValueError:  # "Out of range float values are not JSON compliant"
        path = first_unencodable(value, strings=False)
        raise NotStrictJSON("a number is not finite (NaN or infinity)", path) from None
    # Surrogates are written as \udXXX escapes: only look closer when there is one.
    if "\\ud" in text and any(m.group(3) for m in _ESCAPE.finditer(text)):
        path = first_unencodable(value, numbers=False)
        raise NotStrictJSON("a string holds a lone surrogate, which is not Unicode text", path)
    return text


def first_unencodable(value: Any, *, numbers: bool = True, strings: bool = True) -> str | None:
    """The path (`$.a[0].b`) of the first value strict JSON cannot carry, or None."""
    stack: list[tuple[Any, str]] = [(value, "$")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, float):
            if numbers and not math.isfinite(item):
                return path
        elif isinstance(item, str):
            if strings and _has_lone_surrogate(item):
                return path
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if strings and isinstance(key, str) and _has_lone_surrogate(key):
                    return f"{path} (a key)"
                stack.append((child, f"{path}.{key}"))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{path}[{i}]") for i, child in reversed(list(enumerate(item))))
    return None


def sanitized(value: Any) -> Any:
    """A copy that strict JSON can carry: numbers that are not finite become null (as
    JavaScript's JSON.stringify writes them) and lone surrogates U+FFFD."""
    return _map(value, _sanitize_leaf)


def _sanitize_leaf(item: Any) -> Any:
    if isinstance(item, float) and not math.isfinite(item):
        return None
    if isinstance(item, str) and _has_lone_surrogate(item):
        return _replace_lone_surrogates(item)
    return item


def _map(value: Any, leaf: Callable[[Any], Any]) -> Any:
    if isinstance(value, dict):
        return {leaf(k) if isinstance(k, str) else k: _map(v, leaf) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_map(v, leaf) for v in value]
    return leaf(value)


def _has_lone_surrogate(text: str) -> bool:
    if not _SURROGATE.search(text):
        return False
    try:
        # A pair of surrogates is one character written in two halves: that one is fine.
        text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError:
        return True
    return False


def _replace_lone_surrogates(text: str) -> str:
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
