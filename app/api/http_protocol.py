"""The HTTP/1.1 protocol `python -m app` serves with: uvicorn's httptools one, bounded.

uvicorn's `HttpToolsProtocol` reads a request head of any size and waits for it forever,
answers its parser's errors in text/plain, and after an answer given before the request's
body was read, reads and drops the rest of that body, however large it was declared. Here:

- The head (request line and headers) is at most `MAX_HEAD_BYTES` with at most
  `MAX_HEADER_LINES` header lines: past either, 431 `headers-too-large` (414
  `uri-too-long` when the request target alone is past the size).
- The head has RLHF_HEADER_TIMEOUT_SECONDS to arrive, counted from the connection (the
  first request) or from its first byte (the next ones on a keep-alive connection): then
  408 `header-timeout`. A connection that sends nothing in that time is closed without an
  answer, as uvicorn closes an idle keep-alive connection (`--timeout-keep-alive`).
- The parser's own errors, a malformed request line or header, are 400
  `malformed-request`.
- An answer that starts before the request's body has arrived in full carries
  `Connection: close`, and the connection ends with it: the rest of the body is not read.
  It ends in two steps (RFC 9112, section 9.6), as do the answers below: the answer and a
  FIN at once, the socket itself `_LINGER_SECONDS` later, reading nothing meanwhile.
  Closing a socket with unread data sends a reset, which can make the client's TCP stack
  drop the answer before it is read.
- At shutdown, a request whose body is still arriving when the graceful-shutdown timeout
  (RLHF_SHUTDOWN_TIMEOUT_SECONDS) runs out has its connection closed: the upload is cut and
  the request ends as a client disconnect, instead of being cancelled mid-way with a 500.

Each of these answers is a problem document with `X-Request-ID` (the client's, when its
header arrived and is valid), written here because the app never sees the request, and
ends the connection. The module sits in the HTTP layer for that: it renders the service's
problems and request ids. uvicorn loads it by import path (`python -m app` passes it as
`http=`), so every worker process imports it alone.
"""

from __future__ import annotations

import asyncio
import logging
from functools import cache
from typing import Any

import httptools
import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from ..errors import (
    HeadersTooLargeError,
    HeaderTimeoutError,
    MalformedRequestError,
    ProblemError,
    UriTooLongError,
)
from ..settings import load_settings
from .problems import PROBLEM_MEDIA_TYPE, problem_body
from .request_id import REQUEST_ID_HEADER, valid_request_id

__all__ = ["MAX_HEADER_LINES", "MAX_HEAD_BYTES", "BoundedHttpToolsProtocol"]

# No request of this API needs more: its own headers are a handful of short lines, and a
# bearer token of a few KiB fits many times over. (nginx reads 32 KiB by default, Apache
# 100 lines of 8 KiB.)
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADER_LINES = 100
# What each header line adds to the head besides its name and value: ": " and CRLF.
_HEADER_LINE_OVERHEAD = 4
# Long enough for the answer and the FIN to reach the client ahead of the reset.
_LINGER_SECONDS = 0.5
_CUT_BEFORE_TIMEOUT_SECONDS = 0.5
# A body up to this size is copied after its head into one buffer; a larger one is sent
# beside it without a copy.
_JOINED_BODY_BYTES = 64 * 1024

logger = logging.getLogger("app.http")


@cache
def _header_timeout() -> float:
    # The settings of the environment, as create_app reads them in the same process; the
    # supervisor of `python -m app` has checked them before any worker starts.
    return load_settings().header_timeout_seconds


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded head, a head timeout and early closes."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_timeout = _header_timeout()
        self._head_timer: asyncio.TimerHandle | None = None
        # The head being received: whether the next bytes belong to one, whether any of it
        # has arrived, its size counted in whole chunks and, once parsed, line by line.
        self._reading_head = True
        self._head_started = False
        self._head_chunk_bytes = 0
        self._head_bytes = 0
        self._header_lines = 0
        # Whether the connection may be kept once the request's body has arrived in full.
        self._keep_alive_after_body = False
        # Set once an answer given before the body arrived has half-closed the connection.
        self._lingering = False

    # The connection.

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, but with each refusal answered as a problem, and the bytes of a head
        # that spans several chunks counted as they come: httptools gathers a header line
        # across chunks before it calls back, so a 100 MB header would be read whole.
        within_head = self._reading_head
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            if not isinstance(refusal, ProblemError):
                refusal = MalformedRequestError(f"the request is not valid HTTP/1.1: {exc}")
            self._refuse(refusal)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            self._refuse(MalformedRequestError(f"the request is not valid HTTP/1.1: {exc}"))
            return
        if within_head and self._reading_head:
            self._head_chunk_bytes += len(data)
            if self._head_chunk_bytes > MAX_HEAD_BYTES:
                self._refuse(_head_too_large())

    def send_400_response(self, msg: str) -> None:
        self._refuse(MalformedRequestError(f"the request is not valid HTTP/1.1: {msg}"))

    def shutdown(self) -> None:
        super().shutdown()
        self._keep_alive_after_body = False
        cycle = self.cycle
        timeout = self.config.timeout_graceful_shutdown
        if cycle is not None and cycle.more_body and timeout is not None:
            # uvicorn cancels what still runs once `timeout` is over; cut a little before,
            # and the request ends as a client disconnect, as the app expects of a body
            # that stops, in time for uvicorn (which looks every 0.1 s) to see it gone.
            cut = max(timeout - _CUT_BEFORE_TIMEOUT_SECONDS, 0)
            self.loop.call_later(cut, self._cut_upload, cycle)

    # The parser's callbacks.

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_HEAD_BYTES:
            raise UriTooLongError(MAX_HEAD_BYTES)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._header_lines += 1
        self._head_bytes += len(name) + len(value) + _HEADER_LINE_OVERHEAD
        if self._header_lines > MAX_HEADER_LINES:
            msg = f"the request has more than {MAX_HEADER_LINES} header lines"
            raise HeadersTooLargeError(msg)
        if len(self.url) + self._head_bytes > MAX_HEAD_BYTES:
            raise _head_too_large()

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        self._reading_head = False
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not previous:
            # Until the body has arrived, an answer closes the connection (see the docstring).
            self._keep_alive_after_body = self.cycle.keep_alive
            self.cycle.keep_alive = False
            self.cycle.transport = _HalfClosingTransport(self, self.cycle)
            # uvicorn builds the cycle itself; only its `receive` differs (see the class).
            self.cycle.__class__ = _HandingOverCycle

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.keep_alive = self._keep_alive_after_body
        super().on_message_complete()
        self._reading_head = True
        self._head_started = False
        self._head_chunk_bytes = self._head_bytes = self._header_lines = 0

    def on_response_complete(self) -> None:
        if self._lingering:
            return  # uvicorn would read on, for the next request: there is none
        super().on_response_complete()

    def close_after_answer(self, cycle: RequestResponseCycle) -> None:
        """End the connection after `cycle`'s answer, in two steps if its body is unread."""
        if cycle.more_body:
            self._close_unread()
        else:
            self.transport.close()

    def _close_unread(self) -> None:
        # The answer and a FIN now; the socket, and with it the reset, a moment later.
        transport = self.transport
        if transport.is_closing() or self._lingering:
            return
        if not transport.can_write_eof():
            transport.close()
            return
        self._lingering = True
        self.flow.pause_reading()
        transport.write_eof()
        self.loop.call_later(_LINGER_SECONDS, transport.close)

    # Bounds.

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head_started:
            self._refuse(HeaderTimeoutError(self._head_timeout))
        elif not self.transport.is_closing():
            self.transport.close()  # nothing was asked: nothing to answer

    def _cut_upload(self, cycle: RequestResponseCycle) -> None:
        if cycle.more_body and not cycle.response_complete and not self.transport.is_closing():
            logger.info("shutting down: closing a connection whose request body is still arriving")
            self.transport.close()

    def _refuse(self, problem: ProblemError) -> None:
        """Answer `problem` for the request being received, and end the connection."""
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # The answer to an earlier request is still being written (HTTP pipelining):
            # let it finish, then close, rather than interleave this one with it.
            self.cycle.keep_alive = self._keep_alive_after_body = False
            self._disarm_head_timer()
            return
        request_id = valid_request_id(self._client_request_id())
        body = orjson.dumps(problem_body(problem, request_id))
        headers = [
            *self.server_state.default_headers,
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (REQUEST_ID_HEADER.lower().encode(), request_id.encode()),
            *((name.lower().encode(), value.encode()) for name, value in problem.headers.items()),
            (b"connection", b"close"),
        ]
        head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        self.transport.write(STATUS_LINE[problem.status] + head + b"\r\n" + body)
        self._disarm_head_timer()
        self._close_unread()
        logger.info(
            "%s: %s",
            problem.label,
            problem.detail,
            extra={"request_id": request_id, "status": problem.status},
        )

    def _client_request_id(self) -> str | None:
        # The headers parsed so far of the request being received, if it has begun.
        if not self._head_started:
            return None
        key = REQUEST_ID_HEADER.lower().encode()
        for name, value in self.headers:
            if name == key:
                return value.decode("latin-1")
        return None


class _HandingOverCycle(RequestResponseCycle):
    """uvicorn's request cycle, handing each chunk of the body over in the bytearray it
    was gathered in, where uvicorn's copies it into bytes first.

    A bytearray is bytes to every reader of an ASGI body here: Starlette joins the chunks,
    and `body.read_chunks` appends them; nothing keeps a chunk after taking it.
    """

    async def receive(self) -> Any:
        if self.waiting_for_100_continue and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100_continue = False
        if not self.disconnected and not self.response_complete:
            self.flow.resume_reading()
            await self.message_event.wait()
            self.message_event.clear()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        message = {"type": "http.request", "body": self.body, "more_body": self.more_body}
        self.body = bytearray()
        return message


class _HalfClosingTransport(asyncio.Transport):
    """The connection as a request's cycle sees it: its `close` is the protocol's.

    uvicorn's cycle writes its answer with `write` and ends the connection with `close`;
    nothing else of the transport is used by it. It writes the status line and headers as
    soon as the answer starts, and the body with its own write: here the head waits for
    the first write of the body and goes out with it, so that a small answer costs one
    send to the socket, not two (each a system call that wakes the client).
    """

    def __init__(self, protocol: BoundedHttpToolsProtocol, cycle: RequestResponseCycle) -> None:
        super().__init__()
        self._protocol = protocol
        self._cycle = cycle
        self._head: bytes | bytearray | memoryview | None = None
        self._head_seen = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        cycle = self._cycle
        if not self._head_seen and cycle.response_started:
            self._head_seen = True
            # The body of an answer to HEAD is not written: its head goes out at once.
            if cycle.scope["method"] != "HEAD":
                self._head = data
                return
        transport = self._protocol.transport
        head, self._head = self._head, None
        if head is None:
            transport.write(data)
        elif len(data) <= _JOINED_BODY_BYTES:
            transport.write(bytes(head) + bytes(data))
        else:  # not copied: the transport sends both buffers together
            transport.writelines((head, data))

    def is_closing(self) -> bool:
        return self._protocol.transport.is_closing()

    def close(self) -> None:
        # An answer that ends before its body (the app failed after starting it) still
        # sends the head it has.
        head, self._head = self._head, None
        if head is not None and not self._protocol.transport.is_closing():
            self._protocol.transport.write(head)
        self._protocol.close_after_answer(self._cycle)


def _head_too_large() -> HeadersTooLargeError:
    return HeadersTooLargeError(
        f"the request line and headers exceed the limit of {MAX_HEAD_BYTES} bytes"
    )
