"""Names safe on any filesystem and in any S3 key, made from hostile ones.

Apart from the scanner so that the storage backends name things without loading the
camera walk (wcmatch, structlog): `bwc-dock status` opens the backend and must start at once.
"""

from __future__ import annotations

import re
import unicodedata

_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")
MAX_SAFE_NAME = 120
# Unicode categories never printed as they are: controls (Cc, e.g. ESC), format
# characters (Cf, e.g. U+202E RIGHT-TO-LEFT OVERRIDE), line and paragraph separators,
# and code points that are surrogates, private or unassigned.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


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
    """Text from a camera or from central storage as it may be printed: control and
    format characters and line separators escaped (``\\x1b``, ``\\u202e``), so that a name
    can neither repaint a terminal, nor forge a line of output, nor reverse what it seems
    to say."""
    if text.isprintable():  # the common case: nothing to escape (no per-character work)
        return text
    return "".join(_escaped(character) for character in text)


def _escaped(character: str) -> str:
    if character == " " or unicodedata.category(character) not in _HIDDEN_CATEGORIES:
        return character
    code = ord(character)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
