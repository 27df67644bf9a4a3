"""A small HTTP-aware TCP proxy on 127.0.0.1 that injects faults by explicit maps.

Put it between a client and a real server to damage traffic on purpose::

    with LoopbackProxy(upstream_port, Faults(flip_body={("PUT", 1): 100},
                                             drop_reply={("PUT", 2)})) as proxy:
        ...  # point the client at proxy.url
        assert [r.method for r in proxy.requests] == [...]

Requests are numbered per HTTP method in arrival order, starting at 1: ``("PUT", 1)``
is the first PUT the proxy sees. ``flip_body`` maps such a request to a byte offset
in its body, which is inverted before forwarding. ``drop_reply`` lists requests whose
reply from the server is swallowed: the server did the work, the client sees the
connection close with no answer. Every request is recorded in ``proxy.requests``.

Each client request is forwarded on its own upstream connection with
``Connection: close``, and the client connection is closed after the reply, so the
proxy never has to parse response bodies. ``Expect: 100-continue`` is answered by the
proxy itself. Bodies must have a Content-Length (chunked requests are refused).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import BinaryIO

MAX_HEAD = 64 * 1024
_NOT_IMPLEMENTED_BODY = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NotImplemented'
                         b"</Code><Message>A header you provided implies functionality that"
                         b" is not implemented</Message></Error>")
NOT_IMPLEMENTED_REPLY = (b"HTTP/1.1 501 Not Implemented\r\nContent-Type: application/xml\r\n"
                         b"Content-Length: " + str(len(_NOT_IMPLEMENTED_BODY)).encode()
                         + b"\r\nConnection: close\r\n\r\n" + _NOT_IMPLEMENTED_BODY)


@dataclass(frozen=True)
class Faults:
    """What to damage: keys are (HTTP method, ordinal of that method), from 1."""

    flip_body: Mapping[tuple[str, int], int] = field(default_factory=dict)
    drop_reply: Collection[tuple[str, int]] = ()
    # answered by the proxy itself with 501 NotImplemented, never forwarded
    not_implemented: Collection[tuple[str, int]] = ()


@dataclass
class RequestRecord:
    """One request as the proxy saw it, and what became of it."""

    method: str
    ordinal: int  # 1 = the first request with this method
    target: str  # path and query
    body_length: int
    flipped: bool = False
    reply_dropped: bool = False
    status: int | None = None  # the server's status code, None if none came
    header_names: frozenset[str] = frozenset()  # lowercased


class LoopbackProxy:
    """A threaded proxy from ``127.0.0.1:<port>`` to ``127.0.0.1:<upstream_port>``."""

    def __init__(self, upstream_port: int, faults: Faults | None = None) -> None:
        self.upstream_port = upstream_port
        self.faults = faults or Faults()
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._threads: list[threading.Thread] = []
        self._closed = False

    def __enter__(self) -> LoopbackProxy:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        acceptor = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)
        acceptor.start()
        self._threads.append(acceptor)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def matching(self, method: str, contains: str = "") -> list[RequestRecord]:
        """The recorded requests with ``method`` whose target contains ``contains``."""
        with self._lock:
            return [r for r in self.requests if r.method == method and contains in r.target]

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            worker = threading.Thread(target=self._serve, args=(client,), daemon=True)
            worker.start()

    def _serve(self, client: socket.socket) -> None:
        with client, client.makefile("rb") as reader:
            try:
                self._serve_one(client, reader)
            except (OSError, ValueError):
                return  # a client that went away or spoke garbage: just drop it

    def _serve_one(self, client: socket.socket, reader: BinaryIO) -> None:
        head = _read_head(reader)
        if head is None:
            return
        request_line, headers = head
        method, target, _version = request_line.split(" ", 2)
        lowered = {name.lower(): value for name, value in headers}
        if "chunked" in lowered.get("transfer-encoding", "").lower():
            raise ValueError("chunked request bodies are not supported by this proxy")
        if lowered.get("expect", "").lower() == "100-continue":
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = bytearray(_read_exactly(reader, int(lowered.get("content-length", "0"))))
        record = self._record(method, target, len(body))
        record.header_names = frozenset(lowered)
        if (method, record.ordinal) in self.faults.not_implemented:
            record.status = 501
            client.sendall(NOT_IMPLEMENTED_REPLY)
            return
        offset = self.faults.flip_body.get((method, record.ordinal))
        if offset is not None and offset < len(body):
            body[offset] ^= 0xFF
            record.flipped = True
        reply = self._forward(request_line, headers, bytes(body))
        record.status = _status_of(reply)
        if (method, record.ordinal) in self.faults.drop_reply:
            record.reply_dropped = True
            return  # closing without a word: the client cannot know the server succeeded
        client.sendall(reply)

    def _record(self, method: str, target: str, body_length: int) -> RequestRecord:
        with self._lock:
            self._counts[method] += 1
            record = RequestRecord(method, self._counts[method], target, body_length)
            self.requests.append(record)
        return record

    def _forward(self, request_line: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
        kept = [(name, value) for name, value in headers
                if name.lower() not in ("connection", "expect", "keep-alive")]
        lines = [request_line, *(f"{name}: {value}" for name, value in kept), "Connection: close"]
        with socket.create_connection(("127.0.0.1", self.upstream_port), timeout=60) as upstream:
            upstream.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            chunks = []
            while chunk := upstream.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def _read_head(reader: BinaryIO) -> tuple[str, list[tuple[str, str]]] | None:
    request_line = reader.readline(MAX_HEAD).decode("latin-1").rstrip("\r\n")
    if not request_line:
        return None
    headers: list[tuple[str, str]] = []
    while True:
        line = reader.readline(MAX_HEAD).decode("latin-1").rstrip("\r\n")
        if not line:
            return request_line, headers
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))


def _read_exactly(reader: BinaryIO, length: int) -> bytes:
    data = reader.read(length)
    if len(data) != length:
        raise ValueError("client closed mid-body")
    return data


def _status_of(reply: bytes) -> int | None:
    first_line = reply.split(b"\r\n", 1)[0].split(b" ")
    return int(first_line[1]) if len(first_line) > 1 and first_line[1].isdigit() else None
