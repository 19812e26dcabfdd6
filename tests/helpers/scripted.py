"""Scripted HTTP exchanges for the client tests: a MockTransport that answers from a list."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx2

Answer = httpx2.Response | Exception

OK_BODY: dict[str, Any] = {
    "weights": [1.05, 0.95],
    "stats": {
        "kl_mean": 0.0,
        "reward_mean": 1.0,
        "adjusted_reward_mean": 1.0,
        "grad_norm": 0.7071067811865476,
        "update_norm": 0.07071067811865477,
    },
}


def problem(status: int, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "urn:rlhf-update:problem:test",
        "title": title,
        "status": status,
        "detail": detail,
        "errors": [],
        **extra,
    }


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx2.Response:
    """A response with a JSON body (problem+json for errors)."""
    media = "application/json" if status < 400 else "application/problem+json"
    content = json.dumps(OK_BODY if body is None else body).encode()
    return httpx2.Response(
        status, content=content, headers={"content-type": media, **(headers or {})}
    )


class Script:
    """Answers the requests in order; records every request it saw."""

    def __init__(self, answers: Sequence[Answer]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        next_answer = self.answers[len(self.requests) - 1]
        if isinstance(next_answer, Exception):
            raise next_answer
        return next_answer

    @property
    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self)


class Sleeps:
    """Stands in for time.sleep: records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
