"""The sd_notify protocol: tell systemd we are ready, what we are doing, and that we live.

systemd passes ``$NOTIFY_SOCKET`` to a ``Type=notify`` service: a datagram socket that
takes newline-separated ``KEY=VALUE`` assignments (``READY=1``, ``STATUS=...``,
``WATCHDOG=1``, ``STOPPING=1``, ``RELOADING=1``). A name starting with ``@`` is in the
abstract namespace. Outside systemd the variable is unset and every call is a no-op, so
the daemon can call these unconditionally.

Written here rather than taken from the ``sdnotify`` package: that package's last release
is from 2017, it has no type hints, it swallows every error unless put in debug mode, and
it does not read ``$WATCHDOG_USEC``; the protocol itself is one ``sendto``.
"""

from __future__ import annotations

import os
import socket
import time

import structlog

log = structlog.get_logger(__name__)

_STATUS_LIMIT = 200  # systemctl status shows one line; a longer text only gets cut there


def notify_socket_address(environ: dict[str, str] | None = None) -> str | bytes | None:
    """The address from ``$NOTIFY_SOCKET`` in a form ``sendto`` accepts, or None when unset."""
    value = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not value:
        return None
    if value.startswith("@"):
        # abstract namespace: a leading NUL byte instead of the "@" systemd writes
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise ValueError(f"NOTIFY_SOCKET is neither a path nor an abstract name: {value!r}")


def send(message: str, address: str | bytes) -> None:
    """Send one notification datagram to ``address``; raise :class:`OSError` on failure."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sender:
        sender.sendto(message.encode("utf-8"), address)


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings systemd expects, or None when it expects none.

    This is half of ``WatchdogSec=``, as sd_watchdog_enabled(3) recommends, so one late
    loop does not get the service killed.
    """
    environ = dict(os.environ) if environ is None else environ
    microseconds = environ.get("WATCHDOG_USEC", "")
    watched_pid = environ.get("WATCHDOG_PID", "")
    if not microseconds.isdigit() or int(microseconds) == 0:
        return None
    if watched_pid and watched_pid != str(os.getpid()):
        return None  # the variable was inherited from a parent that is the one watched
    return int(microseconds) / 1_000_000 / 2


class Notifier:
    """The daemon's line to systemd; every method is a no-op when not run by systemd.

    A failed send is logged once (``systemd.notify_failed``) and not raised: losing a
    STATUS line must not stop an offload, and a lost WATCHDOG ping is already handled
    by systemd restarting us.
    """

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        try:
            self._address = notify_socket_address(environ)
        except ValueError as error:
            # e.g. a vsock address from a newer systemd in a VM: run on, unnotified
            log.warning("systemd.notify_unsupported", error=str(error))
            self._address = None
        self._failing = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, **assignments: str | int) -> bool:
        """Send ``KEY=VALUE`` lines (keys upper-cased); True when systemd got them."""
        if self._address is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in assignments.items())
        try:
            send(message, self._address)
        except OSError as error:
            if not self._failing:
                log.warning("systemd.notify_failed", error=str(error), errno=error.errno)
            self._failing = True
            return False
        self._failing = False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up (including recovery) is done; systemd may consider the service up."""
        if status is None:
            return self.notify(ready=1)
        return self.notify(ready=1, status=_one_line(status))

    def status(self, text: str) -> bool:
        """Replace the line ``systemctl status`` shows."""
        return self.notify(status=_one_line(text))

    def watchdog(self) -> bool:
        """The main loop is alive."""
        return self.notify(watchdog=1)

    def reloading(self) -> bool:
        """Configuration reload has begun; follow with :meth:`ready` when done (or failed)."""
        # MONOTONIC_USEC lets systemd >= 253 tell this reload from an older one.
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(reloading=1, monotonic_usec=monotonic_usec)

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun."""
        if status is None:
            return self.notify(stopping=1)
        return self.notify(stopping=1, status=_one_line(status))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before systemd gives up on a start or stop in progress."""
        return self.notify(extend_timeout_usec=int(seconds * 1_000_000))


def _one_line(text: str) -> str:
    """A single line: a newline would start a new (and bogus) assignment."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _STATUS_LIMIT else flat[: _STATUS_LIMIT - 1] + "…"
