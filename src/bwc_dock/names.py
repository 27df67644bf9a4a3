"""Names safe on any filesystem and in any S3 key, made from hostile ones.

Apart from the scanner so that the storage backends name things without loading the
camera walk (wcmatch, structlog): `bwc-dock status` opens the backend (issue 12).
"""

from __future__ import annotations

import re

_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")
MAX_SAFE_NAME = 120


def safe_name(raw_name: bytes) -> str:
    """A file name that is safe on any filesystem and in any S3 key, from a hostile one."""
    text = raw_name.decode("utf-8", "replace")
    cleaned = _UNSAFE_NAME_CHARACTERS.sub("_", text).strip("._") or "unnamed"
    if len(cleaned) > MAX_SAFE_NAME:
        stem, dot, extension = cleaned.rpartition(".")
        keep = MAX_SAFE_NAME - len(extension) - 1
        cleaned = (
            f"{stem[:keep]}.{extension}"
            if dot and 0 < len(extension) < 10
            else (cleaned[:MAX_SAFE_NAME])
        )
    return cleaned


def display_text(text: str) -> str:
    """Text from a camera or from central storage as it may be printed: every character
    that is not printable (escape sequences, newlines, right-to-left overrides) escaped,
    so it can neither repaint a terminal nor forge a line of output."""
    if text.isprintable():  # the common case: nothing to escape
        return text
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
