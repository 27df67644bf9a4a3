"""Structured events to journald with native fields, so one camera's story is one query.

``journalctl -u bwc-dock BWC_CAMERA=X81234567`` works because every structlog event is
sent over journald's native protocol (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/) with
its bound values as fields: ``BWC_EVENT``, ``BWC_CAMERA``, ``BWC_CLIP``, ``BWC_SHA256``,
any other key as ``BWC_<KEY>``, ``PRIORITY`` from the level, ``SYSLOG_IDENTIFIER`` and a
readable ``MESSAGE``.

The protocol is written here rather than taken from a library, on purpose:

* ``systemd-python`` ships no wheels; every dock PC (the installer builds a venv there)
  and CI would need a C compiler, Python headers and ``libsystemd-dev``.
* ``cysystemd`` ships a wheel that bundles its own libsystemd, libgcrypt, lz4, zstd and
  xz (2.4 MB of native code) for one ``sendmsg``, and only for glibc >= 2.34.
* Both call ``sd_journal_sendv``, which always writes to /run/systemd/journal/socket.
  Taking the socket as a parameter is what lets the tests send to a real journald run in
  a private journal namespace (``systemd-journald NAMESPACE``) without touching the
  machine's journal.

The protocol is small and stable: datagrams of ``KEY=VALUE\\n`` lines, a length-prefixed
form for values holding a newline, and a sealed memfd passed with SCM_RIGHTS for
entries larger than one datagram. Values pass through byte-exact, whatever a hostile
camera put in a file name.
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import re
import socket
import sys
import threading
import traceback
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog

JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "bwc-dock"

# syslog priorities (journald's PRIORITY field) for structlog's level names
_PRIORITIES = {
    "critical": 2,
    "fatal": 2,
    "exception": 3,
    "error": 3,
    "warning": 4,
    "warn": 4,
    "info": 6,
    "debug": 7,
}
_DEFAULT_PRIORITY = 6
# bound keys with a field name of their own; all others become BWC_<KEY>
_FIELD_FOR_KEY = {
    "event": "BWC_EVENT",
    "camera": "BWC_CAMERA",
    "camera_serial": "BWC_CAMERA",
    "clip": "BWC_CLIP",
    "clip_id": "BWC_CLIP",
    "sha256": "BWC_SHA256",
}
# keys that journald records itself or that are turned into PRIORITY/MESSAGE
_NOT_FIELDS = frozenset({"level", "timestamp", "exc_info"})
_FIELD_NAME_LIMIT = 64
_NOT_IN_FIELD_NAME = re.compile(r"[^A-Z0-9_]")
_MEMFD_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL

Fields = list[tuple[str, bytes]]


def running_under_journald(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (stderr by default) is the journal stream systemd connected.

    ``$JOURNAL_STREAM`` holds ``device:inode`` of that stream; comparing it with the
    actual stderr tells a service apart from a child whose stderr was redirected.
    """
    expected = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = expected.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    stream = sys.stderr if stream is None else stream
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False  # no real file behind the stream (closed, or captured in memory)
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


def field_name(key: str) -> str:
    """The journal field for a bound key: [A-Z0-9_], not starting with "_", at most 64."""
    if key in _FIELD_FOR_KEY:
        return _FIELD_FOR_KEY[key]
    return ("BWC_" + _NOT_IN_FIELD_NAME.sub("_", key.upper()))[:_FIELD_NAME_LIMIT]


def priority(level: str) -> int:
    return _PRIORITIES.get(level.lower(), _DEFAULT_PRIORITY)


def message_line(event_dict: Mapping[str, Any]) -> str:
    """A readable one-line MESSAGE: the event name, then ``key=value`` for each bound value."""
    parts = [str(event_dict.get("event", ""))]
    for key, value in event_dict.items():
        if key in ("event", "exception", "stack", *_NOT_FIELDS):
            continue
        text = _text(value)
        if not text or any(character.isspace() or character in "\"'=" for character in text):
            text = repr(text)
        parts.append(f"{key}={text}")
    return " ".join(parts)


def entry_fields(
    event_dict: Mapping[str, Any],
    method_name: str,
    identifier: str = IDENTIFIER,
) -> Fields:
    """The journal entry for one structlog event, as (field, value) pairs."""
    level = str(event_dict.get("level", method_name))
    fields: Fields = [
        ("MESSAGE", _encode(message_line(event_dict))),
        ("PRIORITY", str(priority(level)).encode()),
        ("SYSLOG_IDENTIFIER", identifier.encode()),
    ]
    for key, value in event_dict.items():
        if key in _NOT_FIELDS:
            continue
        fields.append((field_name(key), _encode(_text(value))))
    trace = _traceback(event_dict, method_name)
    if trace:
        fields.append(("BWC_EXCEPTION", _encode(trace)))
    return fields


def encode_entry(fields: Iterable[tuple[str, bytes]]) -> bytes:
    """Serialise fields in the native protocol; values with a newline use the length form."""
    chunks: list[bytes] = []
    for name, value in fields:
        if b"\n" in value:
            chunks += [name.encode(), b"\n", len(value).to_bytes(8, "little"), value, b"\n"]
        else:
            chunks += [name.encode(), b"=", value, b"\n"]
    return b"".join(chunks)


class JournalSender:
    """A datagram socket to journald; entries too big for one datagram go in a sealed memfd."""

    def __init__(self, socket_path: str = JOURNAL_SOCKET) -> None:
        self.socket_path = socket_path
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()  # creating the socket; sendmsg itself is atomic

    def send(self, fields: Iterable[tuple[str, bytes]]) -> None:
        """Send one entry; raise :class:`OSError` when journald cannot take it."""
        payload = encode_entry(fields)
        sender = self._connected()
        try:
            sender.sendto(payload, self.socket_path)
        except OSError as error:
            if error.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_as_memfd(sender, payload)

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def _connected(self) -> socket.socket:
        with self._lock:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
            return self._socket

    def _send_as_memfd(self, sender: socket.socket, payload: bytes) -> None:
        descriptor = os.memfd_create("bwc-dock-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(descriptor, view) :]
            # journald only trusts a memfd nobody can change any more
            fcntl.fcntl(descriptor, fcntl.F_ADD_SEALS, _MEMFD_SEALS)
            rights = array.array("i", [descriptor]).tobytes()
            sender.sendmsg(
                [], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)], 0, self.socket_path
            )
        finally:
            os.close(descriptor)


class JournaldRenderer:
    """The final structlog processor under systemd: send the event, print nothing.

    When journald cannot take an entry, the readable line goes to ``fallback`` (stderr,
    which systemd connects to the journal too) with a ``<priority>`` prefix that journald
    reads on that stream, so the event is not lost, only its fields.
    """

    def __init__(
        self,
        socket_path: str | None = None,
        identifier: str = IDENTIFIER,
        fallback: TextIO | None = None,
    ) -> None:
        self.sender = JournalSender(socket_path or JOURNAL_SOCKET)
        self.identifier = identifier
        self._fallback = fallback

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> Any:
        fields = entry_fields(event_dict, method_name, self.identifier)
        try:
            self.sender.send(fields)
        except OSError as error:
            fallback = self._fallback or sys.stderr
            line = message_line(event_dict)
            level = str(event_dict.get("level", method_name))
            fallback.write(f"<{priority(level)}>{line} journal_error={error.strerror!r}\n")
            fallback.flush()
        raise structlog.DropEvent


def journald_renderer(
    socket_path: str | None = None, identifier: str = IDENTIFIER
) -> JournaldRenderer:
    """The processor to put last in structlog's chain when :func:`running_under_journald`."""
    return JournaldRenderer(socket_path=socket_path, identifier=identifier)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


def _encode(text: str) -> bytes:
    # A name from a camera may hold bytes that are not UTF-8 (surrogate escapes): keep
    # them visible as \x.. instead of failing to log the event that mentions them.
    return text.encode("utf-8", errors="backslashreplace")


def _traceback(event_dict: Mapping[str, Any], method_name: str) -> str:
    """A traceback from ``format_exc_info`` (``exception``) or a raw ``exc_info``."""
    if "exception" in event_dict:
        return ""  # already a bound value, sent as BWC_EXCEPTION by the field loop
    # structlog's generic BoundLogger.exception() passes no exc_info, only its name
    exc_info = event_dict.get("exc_info", method_name == "exception")
    if not exc_info:
        return ""
    if isinstance(exc_info, BaseException):
        return "".join(traceback.format_exception(exc_info))
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, tuple) and exc_info[0] is not None:
        return "".join(traceback.format_exception(*exc_info))
    return ""
