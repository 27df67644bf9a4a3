"""Remote key templates: which fields a key may be built from, and which keys are safe.

Keys are content-addressed by default: built only from what every dock agrees on, so the
same content from the same camera has the same key at every dock, and different content
never shares one. A template is checked once, when the configuration is read.
"""

from __future__ import annotations

import re
import string
from datetime import UTC, datetime

# Content-addressed: built only from what every dock agrees on, so the same content from
# the same camera has the same key at every dock and different content never shares one.
DEFAULT_KEY_TEMPLATE = "{camera}/{recorded:%Y/%m/%d}/{stem}.{sha16}{ext}"
# Fields a key_template may use; the last two are dock-local (not fleet-safe).
KEY_FIELDS = ("camera", "recorded", "name", "stem", "ext", "sha256", "sha16", "clip_id", "dock")
CONTENT_FIELDS = frozenset({"sha256", "sha16"})
DOCK_LOCAL_FIELDS = frozenset({"clip_id", "dock"})
_SAMPLE_SHA256 = "0" * 64


def key_template_fields(template: str) -> set[str]:
    """The field names a key template uses (``{recorded:%Y}`` -> ``recorded``)."""
    fields = set()
    for _text, field_name, _spec, _conversion in string.Formatter().parse(template):
        if field_name is not None:
            fields.add(re.split(r"[.\[]", field_name, maxsplit=1)[0])
    return fields


def key_template_problem(template: str) -> str | None:
    """Why ``template`` cannot make keys (an unknown field, a bad format); None if it can."""
    try:
        fields = key_template_fields(template)
    except ValueError as error:
        return f"not a valid template: {error}"
    unknown = sorted(fields - set(KEY_FIELDS))
    if unknown:
        return (
            f"unknown field(s) {', '.join('{' + name + '}' for name in unknown)}; "
            f"known: {', '.join('{' + name + '}' for name in KEY_FIELDS)}"
        )
    sample = {name: "x" for name in KEY_FIELDS} | {
        "recorded": datetime(2026, 11, 24, 8, 15, tzinfo=UTC),
        "sha256": _SAMPLE_SHA256,
        "sha16": _SAMPLE_SHA256[:16],
        "clip_id": 1,
    }
    try:
        key = template.format(**sample)
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as error:
        return f"not a valid template: {error}"
    if any(part in ("", ".", "..") for part in key.split("/")):
        return f"makes keys with an empty, '.' or '..' part (e.g. {key!r})"
    return None


def key_template_collides(template: str) -> bool:
    """Whether keys from ``template`` can name different content at two docks."""
    fields = key_template_fields(template)
    return not fields & CONTENT_FIELDS and "dock" not in fields


def key_template_risks(template: str) -> list[str]:
    """Why keys from ``template`` are not fleet-safe (docks sharing one store)."""
    fields = key_template_fields(template)
    risks = []
    if not fields & CONTENT_FIELDS:
        risks.append(
            "has no {sha16} or {sha256} field: different content can get the same key "
            "at two docks (or after a camera is cleared), and the second is quarantined"
        )
    local = sorted(fields & DOCK_LOCAL_FIELDS)
    if local:
        risks.append(
            f"uses dock-local field(s) {', '.join('{' + name + '}' for name in local)}: the "
            "same clip offloaded at two docks is stored twice, under two keys"
        )
    return risks
