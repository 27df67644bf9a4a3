"""Logging setup, in one place.

Events have stable dotted names (``clip.staged``, ``upload.retry``, ``dock.undocked``)
with the camera, clip and hash bound as fields. What the levels mean:

- debug: detail for developers (tracebacks appear only here);
- info: normal progress, one event per state change;
- warning: something went wrong and will be retried or was refused (a hostile entry);
- error: evidence needs a person: quarantine, storage refusing us, a broken chain.

Output: readable lines on a terminal, JSON with ``--log-format json``, and under
systemd (JOURNAL_STREAM set) journald native fields when the journald module is there.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# Field names that might carry a secret are never rendered.
_SECRET_FIELDS = frozenset(
    {
        "password",
        "secret",
        "secret_access_key",
        "aws_secret_access_key",
        "token",
        "session_token",
        "authorization",
        "credentials",
    }
)


def _drop_secrets(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    for name in list(event):
        if name.lower() in _SECRET_FIELDS:
            event[name] = "[redacted]"
    return event


def _journald_renderer() -> Any | None:
    """The journald renderer of the service module, when running under journald."""
    try:
        from bwc_dock import journald
    except ImportError:
        return None
    if not journald.running_under_journald():
        return None
    return journald.journald_renderer()


def configure_logging(level: str = "info", log_format: str = "auto") -> None:
    numeric_level = _LEVELS.get(level, logging.INFO)
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_secrets,
    ]
    renderer: Any
    if log_format in ("auto", "journald") and (journald := _journald_renderer()) is not None:
        renderer = journald
    elif log_format == "json":
        processors.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer(sort_keys=True)
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty() and "NO_COLOR" not in os.environ,
            exception_formatter=structlog.dev.plain_traceback,
        )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
