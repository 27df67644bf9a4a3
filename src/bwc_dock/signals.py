"""The daemon's signals: SIGTERM/SIGINT stop it, SIGHUP asks for a configuration reload.

A Python handler runs in the main thread between two bytecodes, possibly while that
thread holds the log's write lock or an Event's lock; logging or setting an Event there
can take the same lock again and hang the daemon for good (seen: SIGTERM during the
``daemon.started`` log line). So the handlers only note the signal, and the C-level
handler writes its number to a socket that the ``signals`` thread reads, promptly, in
ordinary context, where the stop and reload are acted on.
"""

from __future__ import annotations

import signal
import socket
import threading
from types import FrameType

import structlog

log = structlog.get_logger(__name__)


class SignalWatcher:
    """Notes signals and turns them into the daemon's stop, wake and reload events."""

    def __init__(
        self,
        stop_event: threading.Event,
        wake_event: threading.Event,
        reload_requested: threading.Event,
    ) -> None:
        self.stop_event = stop_event
        self.wake_event = wake_event
        self.reload_requested = reload_requested
        self._stop_signal: int | None = None
        self._hangup_received = False
        self._lock = threading.Lock()  # the main loop and the signals thread
        self._sockets: tuple[socket.socket, socket.socket] | None = None

    def install(self) -> None:
        """Install the handlers and start the ``signals`` thread (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        receiver, sender = socket.socketpair()
        sender.setblocking(False)
        signal.set_wakeup_fd(sender.fileno(), warn_on_full_buffer=False)
        self._sockets = (receiver, sender)  # kept open for the life of the daemon

        def note_stop(signum: int, _frame: FrameType | None) -> None:
            self._stop_signal = signum

        def note_hangup(_signum: int, _frame: FrameType | None) -> None:
            self._hangup_received = True

        signal.signal(signal.SIGTERM, note_stop)
        signal.signal(signal.SIGINT, note_stop)
        signal.signal(signal.SIGHUP, note_hangup)
        threading.Thread(
            target=self._watch, args=(receiver,), name="signals", daemon=True
        ).start()

    def stop_requested(self) -> bool:
        """Act on the signals noted so far; True once the daemon must stop."""
        with self._lock:
            return self._act()

    def _watch(self, receiver: socket.socket) -> None:
        while True:
            try:
                received = receiver.recv(64)
            except OSError as error:
                log.error("daemon.signal_watch_failed", error=str(error))
                return
            if not received:
                return
            # the bytes are the signal numbers, written before the Python handlers run
            for signum in received:
                if signum == signal.SIGHUP:
                    self._hangup_received = True
                elif signum in (signal.SIGTERM, signal.SIGINT):
                    self._stop_signal = signum
            self.stop_requested()

    def _act(self) -> bool:
        if self._hangup_received:
            self._hangup_received = False
            self.reload_requested.set()
        if self._stop_signal is not None and not self.stop_event.is_set():
            log.info("daemon.stopping", signal=signal.Signals(self._stop_signal).name)
            self.stop_event.set()
            self.wake_event.set()
        return self.stop_event.is_set()
