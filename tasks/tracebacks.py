"""The traceback of a tool's exception, as the step's events and snapshot keep it.

A person debugging a step needs the whole chain (`raise ... from ...`, exceptions
raised while handling others) and, above all, where the last one was raised: the end
of the text. A huge traceback (deep recursion, a giant repr in a message) is cut in the
middle, keeping its head and its tail and saying how much was left out.
"""

from __future__ import annotations

import traceback

#: The most characters of a traceback kept (in events and in the snapshot).
MAX_TRACEBACK_CHARS = 16_384
#: Of those, the share kept from the head (the first frames and the chain's start).
HEAD_CHARS = 4_096


def formatted(exc: BaseException, limit: int = MAX_TRACEBACK_CHARS) -> str:
    """`exc`'s traceback (`traceback.format_exception`, chained exceptions included)
    as valid Unicode, at most `limit` characters: head and tail around a marker."""
    text = "".join(traceback.format_exception(exc))
    # Lone surrogates (in a message or a repr) cannot be stored: show them escaped.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return capped(text, limit)


def capped(text: str, limit: int = MAX_TRACEBACK_CHARS) -> str:
    """`text` if at most `limit` characters, else its head and tail with the count of
    characters left out between them."""
    if len(text) <= limit:
        return text
    head = min(HEAD_CHARS, limit // 4)
    # Room for the marker with as many digits as the count could have.
    tail = limit - head - len(_marker(len(text)))
    return text[:head] + _marker(len(text) - head - tail) + text[len(text) - tail :]


def _marker(left_out: int) -> str:
    return f"\n… {left_out} characters left out …\n"
