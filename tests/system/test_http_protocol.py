"""The HTTP protocol of `python -m app` on a real socket: the request head is bounded in
size and time, the parser's errors are problem documents, an early answer closes.

Each case sends raw bytes a client library would not, then checks the answer, that the
server ended the connection and when, and that /healthz kept answering others meanwhile.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx2
import pytest

from app.api.http_protocol import MAX_HEAD_BYTES, MAX_HEADER_LINES
from scripts.live_server import LiveServer, live_server
from tests.helpers.raw_http import (
    RawAnswer,
    connect,
    exchange,
    get,
    read_answer,
    read_to_end,
)

pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 1.5
MAX_BODY = "4KiB"  # a size with a unit: 4096 bytes


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    env = {
        "RLHF_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "RLHF_MAX_BODY_SIZE": MAX_BODY,
        "RLHF_SHUTDOWN_DRAIN_SECONDS": "0",
    }
    with live_server(env, args=("--no-access-log", "--timeout-keep-alive", "1")) as running:
        yield running


def healthz_seconds(server: LiveServer) -> float:
    """How long /healthz takes to answer 200 on a connection of its own."""
    start = time.monotonic()
    assert httpx2.get(f"{server.base_url}/healthz", timeout=5).status_code == 200
    return time.monotonic() - start


def assert_refused(answer: RawAnswer, status: int, slug: str) -> dict[str, object]:
    """`answer` is one problem document of `status` and `slug`, and the connection ended."""
    assert answer.status == status, answer.data[:300]
    assert answer.headers["connection"] == "close"
    assert answer.ended
    problem = answer.problem()
    assert problem["type"] == f"urn:rlhf-update:problem:{slug}"
    assert problem["status"] == status
    assert problem["request_id"] == answer.headers["x-request-id"]
    return problem


def head(lines: int, request_id: str = "head-1") -> bytes:
    """A GET /healthz with `lines` header lines in all."""
    fixed = ["Host: test", f"X-Request-ID: {request_id}", "Connection: close"]
    extra = [f"X-Extra-{i}: {i}" for i in range(lines - len(fixed))]
    return ("\r\n".join(["GET /healthz HTTP/1.1", *fixed, *extra]) + "\r\n\r\n").encode()


# The head's size and its number of lines.


def test_as_many_header_lines_as_allowed_are_served(server: LiveServer) -> None:
    answer = exchange(server.base_url, head(MAX_HEADER_LINES))
    assert answer.status == 200


def test_one_header_line_too_many_gets_431(server: LiveServer) -> None:
    answer = exchange(server.base_url, head(MAX_HEADER_LINES + 1, request_id="lines-1"))
    problem = assert_refused(answer, 431, "headers-too-large")
    assert f"more than {MAX_HEADER_LINES} header lines" in str(problem["detail"])
    assert answer.headers["x-request-id"] == "lines-1"  # the client's, it had arrived
    assert answer.seconds < 1


def test_a_million_header_lines_are_refused_after_the_first_few(server: LiveServer) -> None:
    lines = b"".join(b"X-A: b\r\n" for _ in range(1_000_000))  # 8 MB
    answer, sent = _send_while_reading(server, b"GET /healthz HTTP/1.1\r\n" + lines + b"\r\n")
    assert_refused(answer, 431, "headers-too-large")
    assert answer.seconds < 2
    assert sent < len(lines)  # the server ended the connection before it was all sent


def test_a_header_larger_than_the_head_limit_gets_431_before_it_is_read(
    server: LiveServer,
) -> None:
    # 100 MB in one header value: the server answers once it has read the limit (plus one
    # chunk), and reads no more; what the client got into the socket meanwhile is what
    # the kernel's buffers hold, not the 100 MB.
    request = b"GET /healthz HTTP/1.1\r\nX-Request-ID: big-1\r\nX-Big: "
    answer, sent = _send_while_reading(server, request, endless=b"a" * 65536)
    problem = assert_refused(answer, 431, "headers-too-large")
    assert f"limit of {MAX_HEAD_BYTES} bytes" in str(problem["detail"])
    assert answer.headers["x-request-id"] == "big-1"
    assert answer.seconds < 2
    assert sent < 32 * 2**20
    assert healthz_seconds(server) < 0.5


def test_a_head_just_within_the_limit_is_served(server: LiveServer) -> None:
    value = "a" * (MAX_HEAD_BYTES - 200)
    answer = exchange(server.base_url, get("/healthz", {"X-Padding": value}))
    assert answer.status == 200


def test_a_request_target_longer_than_the_head_limit_gets_414(server: LiveServer) -> None:
    answer = exchange(server.base_url, b"GET /" + b"a" * (MAX_HEAD_BYTES + 1) + b" HTTP/1.1\r\n")
    assert_refused(answer, 414, "uri-too-long")


# The head's time.


def test_an_unfinished_request_line_gets_408_at_the_header_timeout(server: LiveServer) -> None:
    with connect(server.base_url) as sock:
        sock.sendall(b"POST /upd")
        answer = read_to_end(sock, wait=HEADER_TIMEOUT + 5)
    problem = assert_refused(answer, 408, "header-timeout")
    assert "RLHF_HEADER_TIMEOUT_SECONDS" in str(problem["detail"])
    assert HEADER_TIMEOUT - 0.1 < answer.seconds < HEADER_TIMEOUT + 1


def test_a_head_trickled_in_byte_by_byte_is_cut_at_the_header_timeout(
    server: LiveServer,
) -> None:
    # Each byte arrives before any idle timer would fire; the head's deadline still holds.
    with connect(server.base_url) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        answer = None
        while time.monotonic() - start < HEADER_TIMEOUT + 5:
            try:
                sock.sendall(b"a")
            except OSError:
                break
            sock.settimeout(0.2)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            answer = RawAnswer(data + read_to_end(sock, 2).data, True, 0.0)
            break
        elapsed = time.monotonic() - start
    assert answer is not None
    assert_refused(answer, 408, "header-timeout")
    assert HEADER_TIMEOUT - 0.1 < elapsed < HEADER_TIMEOUT + 1


def test_a_connection_that_sends_nothing_is_closed_at_the_header_timeout(
    server: LiveServer,
) -> None:
    with connect(server.base_url) as sock:
        answer = read_to_end(sock, wait=HEADER_TIMEOUT + 5)
    assert answer.ended
    assert answer.data == b""  # nothing was asked: nothing is answered
    assert HEADER_TIMEOUT - 0.1 < answer.seconds < HEADER_TIMEOUT + 1


def test_an_idle_keep_alive_connection_is_closed(server: LiveServer) -> None:
    # After an answer, uvicorn's keep-alive timer (--timeout-keep-alive 1) closes it.
    with connect(server.base_url) as sock:
        sock.sendall(get("/healthz", {"Connection": "keep-alive"}))
        answer = read_to_end(sock, wait=5)
    assert answer.status == 200
    assert answer.ended
    assert 0.9 < answer.seconds < 2.5


def test_slow_and_idle_connections_leave_healthz_answering(server: LiveServer) -> None:
    socks = [connect(server.base_url) for _ in range(50)]
    try:
        for i, sock in enumerate(socks):
            if i % 2:
                sock.sendall(b"POST /update HTTP/1.1\r\nHost: te")  # half a head; half idle
        latencies = []
        while not all(_ended(sock) for sock in socks):
            latencies.append(healthz_seconds(server))
            time.sleep(0.1)
            assert len(latencies) < 100, "the connections were not closed"
    finally:
        for sock in socks:
            sock.close()
    assert max(latencies) < 0.5


def test_a_thousand_half_open_connections_leave_the_service_reachable() -> None:
    # Under a soft limit of 1024 open files (a common default), a thousand connections
    # used to exhaust the server's descriptors: it raises its soft limit to the hard one.
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard limit of open files is {hard}: too few to show this")
    env = {"RLHF_HEADER_TIMEOUT_SECONDS": "3", "RLHF_SHUTDOWN_DRAIN_SECONDS": "0"}
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # inherited by the server
    try:
        with live_server(env) as running:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            socks = []
            try:
                for _ in range(1100):
                    sock = connect(running.base_url)
                    sock.sendall(b"GET /heal")
                    socks.append(sock)
                assert healthz_seconds(running) < 1
                deadline = time.monotonic() + 10  # one wait for them all
                answers = [read_to_end(sock, max(deadline - time.monotonic(), 0)) for sock in socks]
            finally:
                for sock in socks:
                    sock.close()
            assert all(answer.ended and answer.status == 408 for answer in answers)
            assert healthz_seconds(running) < 1
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# The parser's errors.


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        pytest.param(b"G@T / HTTP/1.1\r\n\r\n", "Invalid method", id="method"),
        pytest.param(b"GET / HTTP/9.9\r\n\r\n", "Invalid HTTP version", id="version"),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nX-Request-ID: bad-1\r\nHost: x\r\nBad Header: y\r\n\r\n",
            "Invalid header",
            id="header-name",
        ),
        pytest.param(
            b"POST /update HTTP/1.1\r\nContent-Length: ten\r\n\r\n",
            "Content-Length",
            id="content-length",
        ),
        pytest.param(
            b"POST /update HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "Content-Length",
            id="both-lengths",
        ),
    ],
)
def test_parser_errors_are_problem_documents_with_a_request_id(
    server: LiveServer, request_bytes: bytes, reason: str
) -> None:
    answer = exchange(server.base_url, request_bytes)
    problem = assert_refused(answer, 400, "malformed-request")
    assert reason.lower() in str(problem["detail"]).lower()
    request_id = answer.headers["x-request-id"]
    assert request_id == "bad-1" if b"bad-1" in request_bytes else len(request_id) == 32


# Keep-alive is kept where the body has been read.


def test_keep_alive_is_kept_once_the_body_has_been_read(server: LiveServer) -> None:
    body = b"{}"
    post = (
        b"POST /update HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    keep = get("/healthz", {"Connection": "keep-alive"})
    answers = []
    with connect(server.base_url) as sock:
        for request in (post, keep, post, keep):  # four requests in turn on one connection
            sock.sendall(request)
            answers.append(read_answer(sock))
    assert [answer.status for answer in answers] == [422, 200, 422, 200]
    assert all("connection" not in answer.headers for answer in answers)


# An answer before the body has arrived ends the connection (413).


def test_a_413_from_content_length_closes_without_reading_the_rest(server: LiveServer) -> None:
    request = (
        b"POST /update HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"X-Request-ID: huge-1\r\nContent-Length: 1000000000000\r\n\r\n" + b" " * 1000
    )
    answer, sent = _send_while_reading(server, request, endless=b" " * 65536)
    problem = assert_refused(answer, 413, "body-too-large")
    assert "limit of 4096 bytes" in str(problem["detail"])  # RLHF_MAX_BODY_SIZE=4KiB
    assert answer.headers["x-request-id"] == "huge-1"
    assert answer.seconds < 1
    # What the client got into the socket is the kernel's buffers, a few MiB; before, the
    # server read on for as long as the client sent (10 GB in 6 s).
    assert sent < 32 * 2**20


def test_a_413_counted_while_streaming_closes_without_reading_the_rest(
    server: LiveServer,
) -> None:
    request = (
        b"POST /update HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
    answer, sent = _send_while_reading(server, request, endless=chunk)
    assert_refused(answer, 413, "body-too-large")
    assert answer.seconds < 1
    assert sent < 32 * 2**20


@pytest.mark.parametrize("path", ["/update", "/update/grad", "/update/apply"])
@pytest.mark.parametrize(
    ("header", "status", "slug"),
    [
        (b"Content-Type: text/plain", 415, "unsupported-media-type"),
        (
            b"Content-Type: application/json\r\nContent-Encoding: gzip",
            415,
            "unsupported-media-type",
        ),
        (b"Content-Type: application/json; charset=latin-1", 415, "unsupported-media-type"),
    ],
    ids=["content-type", "content-encoding", "charset"],
)
def test_what_the_headers_refuse_is_answered_before_the_body_arrives(
    server: LiveServer, path: str, header: bytes, status: int, slug: str
) -> None:
    # 4000 bytes declared (within the limit), 10 sent: the rest never comes.
    request = b"POST %s HTTP/1.1\r\nHost: test\r\n%s\r\nContent-Length: 4000\r\n\r\n%s" % (
        path.encode(),
        header,
        b"{" * 10,
    )
    with connect(server.base_url) as sock:
        sock.sendall(request)
        answer = read_to_end(sock, wait=3)
    assert_refused(answer, status, slug)
    assert answer.seconds < 1


def test_a_body_within_the_limit_is_still_read_and_answered(server: LiveServer) -> None:
    body = b'{"weights": [1]}' + b" " * 4000
    request = (
        b"POST /update HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with connect(server.base_url) as sock:
        sock.sendall(request)
        answer = read_to_end(sock, wait=3)
    assert answer.status == 422  # read whole: the contract, not the size, refuses it
    assert "connection" not in answer.headers


def _send_while_reading(
    server: LiveServer, request: bytes, endless: bytes = b""
) -> tuple[RawAnswer, int]:
    """Send `request` then `endless` over and over from a thread while reading the answer.

    Returns the answer and how many bytes the client managed to send before the server
    ended the connection.
    """
    sock = connect(server.base_url)
    sent = 0

    def send() -> None:
        nonlocal sent
        try:
            sock.sendall(request)
            sent += len(request)
            while endless:
                sent += sock.send(endless)
        except OSError:
            pass  # the server ended the connection (or the test closed it)

    sender = threading.Thread(target=send, daemon=True)
    start = time.monotonic()
    sender.start()
    try:
        answer = read_to_end(sock, wait=10)
        answer.seconds = time.monotonic() - start
    finally:
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        sender.join(timeout=5)
    return answer, sent


def _ended(sock: socket.socket) -> bool:
    # Whether the server has ended this connection (anything it wrote first is dropped).
    sock.setblocking(False)
    try:
        while data := sock.recv(65536):
            del data
        return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)
