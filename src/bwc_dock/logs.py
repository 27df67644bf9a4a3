"""Logging setup, in one place.

Events have stable dotted names (``clip.staged``, ``upload.retry``, ``dock.undocked``)
with the camera, clip and hash bound as fields. What the levels mean:

- debug: detail for developers (tracebacks appear only here);
- info: normal progress, one event per state change;
- warning: something went wrong and will be retried or was refused (a hostile entry);
- error: evidence needs a person: quarantine, storage refusing us, a broken chain.

Output: readable lines on a terminal, JSON with ``--log-format json``, and under
systemd (JOURNAL_STREAM set) journald native fields when the journald module is there.

structlog is not imported here at the top: importing it loads ``structlog.dev``, which
loads rich, and `bwc-dock status --json` run in a monitoring loop usually has nothing to
log. Modules on that path (the storage package) take their logger from
:func:`get_logger`, and ``configure_logging(..., at_first_event=True)`` sets structlog
up only when such a logger first has an event the level lets through.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

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


# Fields whose several lines are ours (a traceback at debug level), not a name's.
_MULTILINE_FIELDS = frozenset({"exception", "exc_info", "stack"})


def _escape_for_console(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Names from a camera or from central storage reach log fields: on a console line
    their control characters are escaped, so that a name can neither repaint the terminal
    nor forge a log line (JSON and journald carry them as data, escaped or binary-safe)."""
    from bwc_dock.names import display_text

    for name, value in event.items():
        if isinstance(value, str) and name not in _MULTILINE_FIELDS:
            event[name] = display_text(value)
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


@dataclass(frozen=True)
class _Settings:
    level: int
    log_format: str


@dataclass
class _Waiting:
    """Settings given with ``at_first_event`` and not yet handed to structlog."""

    settings: _Settings | None = None


_waiting = _Waiting()


class Logger:
    """A module's structlog logger that imports structlog only for an event it will
    write: while configuration waits for the first event (``at_first_event``), events
    below the configured level are dropped here, as structlog's filter would drop them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: Any = None

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, "debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, "info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, "warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, "error", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """An error with the exception being handled (structlog adds ``exc_info``)."""
        self._log(logging.ERROR, "exception", event, fields)

    def _log(self, level: int, method: str, event: str, fields: dict[str, Any]) -> None:
        waiting = _waiting.settings
        if waiting is not None:
            if level < waiting.level:
                return
            _configure_structlog(waiting)
        if self._logger is None:
            import structlog

            self._logger = structlog.get_logger(self.name)
        getattr(self._logger, method)(event, **fields)


def get_logger(name: str) -> Logger:
    """The logger of module ``name``; structlog loads when it first writes an event."""
    return Logger(name)


def configure_logging(
    level: str = "info", log_format: str = "auto", *, at_first_event: bool = False
) -> None:
    """Send events at ``level`` and above to stderr in ``log_format``.

    With ``at_first_event`` (and structlog not yet loaded), structlog is set up only when
    a :func:`get_logger` logger first has an event at ``level`` or above; a command that
    logs nothing never loads it. Only for code that logs through :func:`get_logger`: a
    module using structlog directly would find it not yet configured.
    """
    settings = _Settings(_LEVELS.get(level, logging.INFO), log_format)
    if at_first_event and "structlog" not in sys.modules:
        _waiting.settings = settings
        return
    _configure_structlog(settings)


def _configure_structlog(settings: _Settings) -> None:
    import structlog

    _waiting.settings = None
    log_format = settings.log_format
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
        processors.append(_escape_for_console)
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty() and "NO_COLOR" not in os.environ,
            exception_formatter=structlog.dev.plain_traceback,
        )
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(settings.level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
