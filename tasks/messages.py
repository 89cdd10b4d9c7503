"""Text that goes into events and run state: always valid Unicode, always bounded.

Messages come from tools, exceptions and MCP servers, any of which may hand over a
string Redis cannot store (a lone surrogate cannot be encoded as UTF-8) or one that
would swamp every viewer of the run (a log line of megabytes).
"""

from __future__ import annotations

#: The most bytes of UTF-8 a log line, progress message or failure message keeps.
MAX_MESSAGE_BYTES = 8192


def clean(text: object, max_bytes: int = MAX_MESSAGE_BYTES) -> str:
    """`text` as a string of valid Unicode of at most `max_bytes` bytes of UTF-8.

    Lone surrogates become `\\udxxx` escapes, visible rather than lost; a longer text is
    cut on a character boundary and says how much was left out.
    """
    if type(text) is str and text.isascii() and len(text) <= max_bytes:
        return text  # the common case, checked without encoding: a progress message
    raw = str(text).encode("utf-8", "backslashreplace")
    if len(raw) <= max_bytes:
        return raw.decode("utf-8")
    # Room for the marker, whose own length depends on the count it shows.
    room = max(0, max_bytes - len(f" [... {len(raw)} more bytes truncated]"))
    kept = raw[:room].decode("utf-8", "ignore")
    return f"{kept} [... {len(raw) - len(kept.encode())} more bytes truncated]"
