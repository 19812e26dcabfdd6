"""POST /update answers alike on its two paths: served directly (no token) and by FastAPI.

Without a bearer token the service answers /update as raw ASGI ahead of FastAPI's stack;
with one, FastAPI's route runs the token's dependency first. Every answer but the
request id must be the same, byte for byte, whatever the path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from app.main import create_app
from app.settings import Settings
from tests.helpers.asgi import RawExchange, body_chunks, raw_post
from tests.helpers.reference import EXAMPLE

TOKEN = "tok-paths-1234"
LIMIT = 1000
JSON = (b"content-type", b"application/json")


def _both(
    headers: Sequence[tuple[bytes, bytes]], messages: Sequence[dict[str, Any]]
) -> tuple[RawExchange, RawExchange]:
    direct = create_app(Settings(max_body_size=LIMIT))
    routed = create_app(Settings(max_body_size=LIMIT, api_token=TOKEN))
    auth = (b"authorization", f"Bearer {TOKEN}".encode())
    return raw_post(direct, headers, messages), raw_post(routed, [*headers, auth], messages)


def _answer(exchange: RawExchange) -> tuple[int, dict[bytes, bytes], Any]:
    """Status, headers and body of an answer, without its request id (one per request)."""
    start, *bodies = exchange.sent
    headers = {name: value for name, value in start["headers"] if name != b"x-request-id"}
    body = b"".join(message.get("body", b"") for message in bodies)
    parsed = orjson.loads(body)
    parsed.pop("request_id", None)
    headers.pop(b"content-length")  # the request ids differ, and so their lengths might not
    return start["status"], headers, parsed


@pytest.mark.parametrize(
    ("headers", "chunks", "status"),
    [
        pytest.param([JSON], [orjson.dumps(EXAMPLE)], 200, id="ok"),
        pytest.param(
            [JSON], [orjson.dumps(EXAMPLE)[:40], orjson.dumps(EXAMPLE)[40:]], 200, id="chunks"
        ),
        pytest.param([JSON], [b'{"weights": [1, 1]'], 400, id="malformed"),
        pytest.param([JSON], [orjson.dumps(EXAMPLE | {"beta": -1})], 422, id="invalid"),
        pytest.param([(b"content-type", b"text/plain")], [orjson.dumps(EXAMPLE)], 415, id="media"),
        pytest.param(
            [JSON, (b"content-encoding", b"gzip")], [orjson.dumps(EXAMPLE)], 415, id="encoding"
        ),
        pytest.param([JSON, (b"content-length", b"5000")], [b" " * 5000], 413, id="declared"),
        pytest.param([JSON], [b" " * 600, b" " * 600], 413, id="streamed"),
        pytest.param(
            [JSON, (b"content-length", b"x")], [orjson.dumps(EXAMPLE)], 200, id="bad-length"
        ),
    ],
)
def test_both_paths_answer_alike(
    headers: list[tuple[bytes, bytes]], chunks: list[bytes], status: int
) -> None:
    direct, routed = _both(headers, body_chunks(chunks))
    assert _answer(direct)[0] == status
    assert _answer(direct) == _answer(routed)
    assert direct.received == routed.received  # the same messages read before the answer


def test_a_client_that_leaves_mid_body_is_answered_alike() -> None:
    messages = [*body_chunks([b'{"weights": [1', b""])[:1], {"type": "http.disconnect"}]
    direct, routed = _both([JSON], messages)
    assert _answer(direct)[0] == 400
    assert _answer(direct) == _answer(routed)
    assert _answer(direct)[2]["type"].endswith("client-disconnected")


def _layers(app: Any) -> list[type]:
    """The classes of the ASGI layers from the outside in, following each one's `app`."""
    layers = []
    layer = app.build_middleware_stack()
    while layer is not None:
        layers.append(type(layer))
        layer = getattr(layer, "app", None)
    return layers


def test_without_a_token_update_is_served_by_the_direct_path_and_with_one_by_fastapi() -> None:
    from app.api.update import DirectUpdate

    assert DirectUpdate in _layers(create_app(Settings()))
    assert DirectUpdate not in _layers(create_app(Settings(api_token=TOKEN)))
