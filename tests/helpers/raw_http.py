"""Raw HTTP/1.1 over a real socket: to send what no client library would, and time the end."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson


def connect(base_url: str, timeout: float = 10) -> socket.socket:
    """A TCP connection to the server at `base_url` (http://host:port)."""
    parts = urlsplit(base_url)
    assert parts.hostname is not None
    assert parts.port is not None
    return socket.create_connection((parts.hostname, parts.port), timeout=timeout)


@dataclass
class RawAnswer:
    """Everything the server sent on one connection until it ended it, and when it did."""

    data: bytes
    ended: bool  # the server closed the connection (EOF, or a reset after its answer)
    seconds: float  # from the call until the end, or until the wait ran out
    headers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        head = self.data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        self.headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    @property
    def status(self) -> int:
        """The status code of the first answer (0 if there was none)."""
        line = self.data.split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) > 1 else 0

    @property
    def body(self) -> bytes:
        return self.data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in self.data else b""

    def problem(self) -> dict[str, object]:
        """The body, a problem document."""
        assert self.headers["content-type"] == "application/problem+json"
        document: dict[str, object] = orjson.loads(self.body)
        return document


def read_to_end(sock: socket.socket, wait: float) -> RawAnswer:
    """Read until the server ends the connection, for at most `wait` seconds."""
    start = time.monotonic()
    data = b""
    ended = False
    while (left := wait - (time.monotonic() - start)) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            ended = True
            break
        if not chunk:
            ended = True
            break
        data += chunk
    return RawAnswer(data, ended, time.monotonic() - start)


def read_answer(sock: socket.socket, wait: float = 5) -> RawAnswer:
    """Read one answer with a Content-Length, leaving the connection open."""
    start = time.monotonic()
    sock.settimeout(wait)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    answer = RawAnswer(data, False, 0.0)
    length = int(answer.headers.get("content-length", "0"))
    while len(answer.body) < length and (chunk := sock.recv(65536)):
        data += chunk
        answer = RawAnswer(data, False, 0.0)
    answer.seconds = time.monotonic() - start
    return answer


def exchange(base_url: str, request: bytes, wait: float = 10) -> RawAnswer:
    """Send `request` on a fresh connection, then read until the server ends it."""
    with connect(base_url) as sock:
        start = time.monotonic()
        sock.sendall(request)
        answer = read_to_end(sock, wait)
        answer.seconds = time.monotonic() - start
        return answer


def get(path: str, headers: dict[str, str] | None = None) -> bytes:
    """A GET request for `path`, with `Connection: close` unless `headers` say otherwise."""
    fields = {"Host": "test", "Connection": "close", **(headers or {})}
    lines = [f"GET {path} HTTP/1.1", *(f"{name}: {value}" for name, value in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
