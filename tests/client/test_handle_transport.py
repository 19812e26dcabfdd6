"""`HandleTransport` turns a handle's failures into the client's errors, with no Ray running.

Its answers through a real deployment are in tests/system/test_ray_serve.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import pytest
from rlhf_client import APIConnectionError, APITimeoutError, HandleTransport

ray_exceptions = pytest.importorskip(
    "ray.exceptions", reason="HandleTransport needs ray[serve]==2.60.0, which `make test` installs"
)
serve_exceptions = pytest.importorskip("ray.serve.exceptions")


@dataclass
class _Response:
    """Stands in for a DeploymentResponse: awaiting it gives `outcome` or raises it."""

    outcome: Any
    delay: float = 0.0
    cancelled: bool = False

    def __await__(self) -> Generator[Any, None, Any]:
        return self._wait().__await__()

    async def _wait(self) -> Any:
        await asyncio.sleep(self.delay)
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class _Method:
    response: _Response
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def remote(self, *args: Any) -> _Response:
        self.calls.append(args)
        return self.response


@dataclass
class _Handle:
    post_block: _Method


def _post(handle: _Handle, timeout: float | None = 60.0) -> Any:
    transport = HandleTransport(handle, timeout=timeout)  # type: ignore[arg-type]
    return asyncio.run(transport.post("/update", b"{}", {"Content-Type": "application/json"}))


def test_an_answer_is_passed_on_as_it_came() -> None:
    handle = _Handle(_Method(_Response((422, {"content-type": "application/problem+json"}, b"x"))))
    answer = _post(handle)
    assert (answer.status, dict(answer.headers), answer.content) == (
        422,
        {"content-type": "application/problem+json"},
        b"x",
    )
    assert handle.post_block.calls == [("/update", b"{}", {"Content-Type": "application/json"})]


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(lambda: ray_exceptions.ActorDiedError(), id="replica-died"),
        pytest.param(lambda: ray_exceptions.ActorUnavailableError("gone", None), id="unavailable"),
        pytest.param(
            lambda: serve_exceptions.BackPressureError(
                num_queued_requests=9, max_queued_requests=8
            ),
            id="backpressure",
        ),
        pytest.param(lambda: serve_exceptions.DeploymentUnavailableError("x"), id="no-deployment"),
    ],
)
def test_an_unreachable_replica_is_a_connection_error(error: Any) -> None:
    with pytest.raises(APIConnectionError, match="could not reach a replica") as raised:
        _post(_Handle(_Method(_Response(error()))))
    assert not isinstance(raised.value, APITimeoutError)


def test_no_answer_in_time_is_a_timeout_and_the_call_is_cancelled() -> None:
    response = _Response((200, {}, b""), delay=5.0)
    with pytest.raises(APITimeoutError, match=r"within 0\.05 s"):
        _post(_Handle(_Method(response)), timeout=0.05)
    assert response.cancelled


def test_an_error_in_the_method_itself_is_not_taken_for_a_network_one() -> None:
    with pytest.raises(ValueError, match="path"):
        _post(_Handle(_Method(_Response(ValueError("path must be ...")))))
