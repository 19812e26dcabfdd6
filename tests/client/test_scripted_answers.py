"""The client against scripted answers: retries, backoff, Retry-After, error mapping, ids."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx2
import numpy as np
import pytest
from numpy.typing import NDArray
from rlhf_client import (
    APIConnectionError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    Client,
    ContentTooLargeError,
    InternalServerError,
    RLHFClientError,
    ServiceUnavailableError,
    UnprocessableEntityError,
    UnsupportedMediaTypeError,
)
from rlhf_client._retry import RetryPolicy

from tests.helpers.reference import EXAMPLE
from tests.helpers.scripted import OK_BODY, Answer, Script, Sleeps, answer, problem

ARGS = tuple(
    EXAMPLE[name]
    for name in ("weights", "rewards", "policy_log_probs", "ref_log_probs", "log_prob_grads")
)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Sleeps:
    """Every wait of the client between attempts, recorded instead of slept."""
    recorded = Sleeps()
    monkeypatch.setattr(time, "sleep", recorded)
    return recorded


def scripted_client(
    answers: Sequence[Answer], sleeps: Sleeps, **kwargs: object
) -> tuple[Client, Script]:
    """A client whose requests `answers` answers; it waits through `sleeps`."""
    script = Script(answers)
    http = httpx2.Client(transport=script.transport, base_url="http://service.test")
    client = Client(http_client=http, **kwargs)  # type: ignore[arg-type]
    return client, script


def update(client: Client, **options: Any) -> NDArray[Any]:
    return client.update(*ARGS, beta=1.0, lr=0.1, **options).weights


def test_retries_503_twice_then_succeeds(sleeps: Sleeps) -> None:
    unavailable = answer(503, problem(503, "Service unavailable", "saturated"))
    client, script = scripted_client([unavailable, unavailable, answer(200)], sleeps)
    assert update(client).tolist() == [1.05, 0.95]
    assert len(script.requests) == 3
    assert len(sleeps.delays) == 2
    # The same body each time: /update is a pure function of its request.
    assert len({r.content for r in script.requests}) == 1


def test_422_is_final_and_carries_the_errors(sleeps: Sleeps) -> None:
    msg = "log_prob_grads[1] has 1 entries; expected 2"
    errors = [{"loc": ["log_prob_grads", 1], "msg": msg}]
    body = problem(422, "Invalid payload", msg, errors=errors)
    client, script = scripted_client([answer(422, body)], sleeps)
    with pytest.raises(UnprocessableEntityError) as caught:
        update(client)
    assert len(script.requests) == 1
    assert sleeps.delays == []
    assert caught.value.status_code == 422
    assert caught.value.errors == errors
    assert caught.value.problem == body
    assert str(caught.value) == "422 Invalid payload: log_prob_grads[1] has 1 entries; expected 2"


def test_retry_after_seconds_is_honoured(sleeps: Sleeps) -> None:
    busy = answer(503, problem(503, "Busy", "try later"), headers={"Retry-After": "3"})
    client, script = scripted_client([busy, answer(200)], sleeps)
    update(client)
    assert sleeps.delays == [3.0]
    assert len(script.requests) == 2


def test_retry_after_http_date_is_honoured(sleeps: Sleeps) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    busy = answer(429, problem(429, "Too many requests", "slow down"), {"Retry-After": when})
    client, _ = scripted_client([busy, answer(200)], sleeps)
    update(client)
    assert 17.0 <= sleeps.delays[0] <= 20.0


def test_timeouts_are_retried_then_raised(sleeps: Sleeps) -> None:
    timeout = httpx2.ReadTimeout("read timed out")
    client, script = scripted_client([timeout, timeout, timeout], sleeps)
    with pytest.raises(APITimeoutError, match="after 3 attempts"):
        update(client)
    assert len(script.requests) == 3
    assert len(sleeps.delays) == 2


def test_a_timeout_then_success(sleeps: Sleeps) -> None:
    client, script = scripted_client([httpx2.ConnectTimeout("slow"), answer(200)], sleeps)
    assert update(client).tolist() == [1.05, 0.95]
    assert len(script.requests) == 2


def test_connection_errors_raise_api_connection_error(sleeps: Sleeps) -> None:
    refused = httpx2.ConnectError("connection refused")
    client, script = scripted_client([refused] * 3, sleeps)
    with pytest.raises(APIConnectionError) as caught:
        update(client)
    assert not isinstance(caught.value, APITimeoutError)
    assert len(script.requests) == 3


def test_max_retries_zero_turns_retries_off(sleeps: Sleeps) -> None:
    unavailable = answer(503, problem(503, "Busy", "saturated"))
    client, script = scripted_client([unavailable], sleeps, max_retries=0)
    with pytest.raises(ServiceUnavailableError):
        update(client)
    assert len(script.requests) == 1
    assert sleeps.delays == []


@pytest.mark.parametrize("status", [408, 429, 502, 503, 504])
def test_retryable_statuses(status: int, sleeps: Sleeps) -> None:
    client, script = scripted_client(
        [answer(status, problem(status, "x", "y")), answer(200)], sleeps
    )
    update(client)
    assert len(script.requests) == 2


@pytest.mark.parametrize("status", [400, 401, 404, 413, 415, 422, 500])
def test_other_statuses_are_not_retried(status: int, sleeps: Sleeps) -> None:
    client, script = scripted_client([answer(status, problem(status, "x", "y"))], sleeps)
    with pytest.raises(APIStatusError):
        update(client)
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        pytest.param(400, BadRequestError, id="400"),
        pytest.param(401, AuthenticationError, id="401"),
        pytest.param(404, APIStatusError, id="404"),
        pytest.param(413, ContentTooLargeError, id="413"),
        pytest.param(415, UnsupportedMediaTypeError, id="415"),
        pytest.param(422, UnprocessableEntityError, id="422"),
        pytest.param(500, InternalServerError, id="500"),
        pytest.param(503, ServiceUnavailableError, id="503"),
        pytest.param(507, InternalServerError, id="507"),
    ],
)
def test_status_maps_to_error_class(
    status: int, error_class: type[APIStatusError], sleeps: Sleeps
) -> None:
    body = problem(status, "Title", "what went wrong")
    client, _ = scripted_client([answer(status, body)] * 3, sleeps, transport="json")
    with pytest.raises(error_class) as caught:
        update(client)
    assert type(caught.value) is error_class
    assert isinstance(caught.value, RLHFClientError)
    assert caught.value.title == "Title"
    assert caught.value.detail == "what went wrong"
    # A JSON body refused as too large also says to send safetensors (and nothing else does).
    hint = caught.value.hint
    assert (hint is not None) == (status == 413)
    assert str(caught.value) == f"{status} Title: what went wrong" + (f"; {hint}" if hint else "")


def test_service_unavailable_is_a_server_error() -> None:
    assert issubclass(ServiceUnavailableError, InternalServerError)
    assert issubclass(APITimeoutError, APIConnectionError)


def test_non_json_error_body_maps_to_its_status(sleeps: Sleeps) -> None:
    html = httpx2.Response(
        502, text="<html>bad gateway</html>", headers={"content-type": "text/html"}
    )
    client, _ = scripted_client([html] * 3, sleeps)
    with pytest.raises(InternalServerError) as caught:
        update(client)
    assert caught.value.status_code == 502
    assert caught.value.title == "Bad Gateway"
    assert "bad gateway" in caught.value.detail
    assert caught.value.errors == []


def test_401_from_a_proxy_with_an_empty_body(sleeps: Sleeps) -> None:
    client, _ = scripted_client([httpx2.Response(401)], sleeps)
    with pytest.raises(AuthenticationError, match="401 Unauthorized"):
        update(client)


def test_request_id_sent_only_when_asked_and_read_from_the_header(sleeps: Sleeps) -> None:
    replies = [answer(200, headers={"X-Request-ID": "abc"}), answer(200)]
    client, script = scripted_client(replies, sleeps)
    first = client.update(*ARGS, beta=1.0, lr=0.1, request_id="mine-1")
    second = client.update(*ARGS, beta=1.0, lr=0.1)
    assert script.requests[0].headers["X-Request-ID"] == "mine-1"
    assert "X-Request-ID" not in script.requests[1].headers
    assert first.request_id == "abc"
    assert second.request_id is None


def test_error_request_id_prefers_the_header_over_the_body(sleeps: Sleeps) -> None:
    body = problem(422, "Invalid payload", "bad", request_id="from-body")
    replies = [answer(422, body, headers={"X-Request-ID": "from-header"}), answer(422, body)]
    client, _ = scripted_client(replies, sleeps)
    with pytest.raises(UnprocessableEntityError) as with_header:
        update(client)
    with pytest.raises(UnprocessableEntityError) as body_only:
        update(client)
    assert with_header.value.request_id == "from-header"
    assert body_only.value.request_id == "from-body"


def test_unknown_stats_are_kept_and_missing_new_ones_are_none(sleeps: Sleeps) -> None:
    body = {"weights": [1.0], "stats": {**OK_BODY["stats"], "entropy": 0.5, "kl_max": 0.25}}
    client, _ = scripted_client([answer(200, body)], sleeps)
    stats = client.update([1.0], [1.0], [0.0], [0.0], [[1.0]], beta=0, lr=0).stats
    assert stats.kl_max == 0.25
    assert stats.extra == {"entropy": 0.5}
    assert stats.reward_std is None
    assert stats.kl_estimates is None
    assert stats.clipped is None


def test_unreadable_success_body_raises_api_response_error(sleeps: Sleeps) -> None:
    client, _ = scripted_client([answer(200, {"weights": [1.0]})], sleeps)
    with pytest.raises(APIResponseError, match="stats"):
        update(client)


def test_options_travel_as_json_fields(sleeps: Sleeps) -> None:
    client, script = scripted_client([answer(200)], sleeps, transport="json")
    update(client, baseline="mean", group_ids=np.array([0, 0]), max_grad_norm=1.0, kl_clamp=None)
    sent = json.loads(script.requests[0].content)
    assert sent["baseline"] == "mean"
    assert sent["group_ids"] == [0, 0]
    assert sent["max_grad_norm"] == 1.0
    assert "kl_clamp" not in sent
    assert script.requests[0].headers["content-type"] == "application/json"


def test_options_travel_in_safetensors_metadata(sleeps: Sleeps) -> None:
    from rlhf_client._wire import read_safetensors_metadata
    from safetensors.numpy import load

    client, script = scripted_client([answer(200)], sleeps, transport="safetensors")
    update(client, baseline="mean", group_ids=[3, 4], normalize_advantages=True, max_grad_norm=1)
    request = script.requests[0]
    assert request.headers["content-type"] == "application/x-safetensors"
    assert "application/x-safetensors" in request.headers["accept"]
    tensors = load(request.content)
    assert tensors["group_ids"].tolist() == [3, 4]
    assert tensors["group_ids"].dtype == np.int64
    assert tensors["beta"].shape == ()
    assert tensors["log_prob_grads"].tolist() == EXAMPLE["log_prob_grads"]
    assert read_safetensors_metadata(request.content) == {
        "baseline": "mean",
        "normalize_advantages": "true",
        "max_grad_norm": "1",
    }


def test_auto_falls_back_to_json_when_the_server_lacks_the_binary_path(sleeps: Sleeps) -> None:
    refused = answer(415, problem(415, "Unsupported media type", "send JSON"))
    client, script = scripted_client(
        [refused, answer(200), answer(200)], sleeps, binary_threshold=1
    )
    update(client)
    update(client)
    kinds = [r.headers["content-type"] for r in script.requests]
    assert kinds == ["application/x-safetensors", "application/json", "application/json"]


def test_api_key_is_sent_as_a_bearer(sleeps: Sleeps) -> None:
    client, script = scripted_client([answer(200)], sleeps, api_key="s3cret")
    update(client)
    assert script.requests[0].headers["Authorization"] == "Bearer s3cret"


def test_api_key_from_the_environment(sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLHF_API_TOKEN", "from-env")
    client, script = scripted_client([answer(200)], sleeps)
    update(client)
    assert script.requests[0].headers["Authorization"] == "Bearer from-env"


def test_base_url_falls_back_to_the_environment_then_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RLHF_BASE_URL", raising=False)
    with Client() as client:
        assert client.base_url == "http://127.0.0.1:8000"
    monkeypatch.setenv("RLHF_BASE_URL", "http://example.test:9000/")
    with Client() as client:
        assert client.base_url == "http://example.test:9000"
    with Client("http://explicit.test") as client:
        assert client.base_url == "http://explicit.test"


def test_default_timeout_is_60s_read_5s_connect_and_per_call_overrides(sleeps: Sleeps) -> None:
    seen: list[dict[str, float | None]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request.extensions["timeout"])
        return answer(200)

    with Client(
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        timeout=httpx2.Timeout(60.0, connect=5.0),
    ) as client:
        client.update(*ARGS, beta=1.0, lr=0.1)
        client.update(*ARGS, beta=1.0, lr=0.1, timeout=2.5)
    assert seen[0]["read"] == 60.0
    assert seen[0]["connect"] == 5.0
    assert seen[1]["read"] == 2.5
    with Client() as owned:
        assert owned._http.timeout == httpx2.Timeout(60.0, connect=5.0)


def test_an_injected_http_client_is_not_closed() -> None:
    http = httpx2.Client()
    with Client(http_client=http):
        pass
    assert not http.is_closed
    http.close()
    with Client() as client:
        owned = client._http
    assert owned.is_closed


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    draws = [1.0, 1.0, 1.0, 1.0, 0.0]
    policy = RetryPolicy(
        max_retries=10, initial_delay=0.5, max_delay=3.0, jitter=lambda: draws.pop(0)
    )
    busy = httpx2.Response(503)
    delays = [policy.retry_after_response(attempt, busy) for attempt in range(5)]
    # Full delay at the top of the jitter range, half at the bottom.
    assert delays == [0.5, 1.0, 2.0, 3.0, 1.5]


def test_retry_after_is_capped_by_max_delay() -> None:
    policy = RetryPolicy(max_retries=1, max_delay=30.0)
    long_wait = httpx2.Response(503, headers={"Retry-After": "3600"})
    assert policy.retry_after_response(0, long_wait) == 30.0
    assert policy.retry_after_response(1, long_wait) is None


def test_local_shape_checks_name_the_argument() -> None:
    with Client() as client:
        with pytest.raises(
            ValueError, match=r"log_prob_grads has shape \(2, 3\); expected \(2, 2\)"
        ):
            client.update([1, 1], [1, 1], [0, 0], [0, 0], np.zeros((2, 3)), beta=0, lr=0)
        with pytest.raises(ValueError, match=r"ref_log_probs has shape \(3,\); expected \(2,\)"):
            client.update([1, 1], [1, 1], [0, 0], [0, 0, 0], np.zeros((2, 2)), beta=0, lr=0)
        with pytest.raises(ValueError, match=r"rewards\[1\] is nan"):
            client.update([1, 1], [1, np.nan], [0, 0], [0, 0], np.zeros((2, 2)), beta=0, lr=0)
        with pytest.raises(ValueError, match="group_ids must be 2 integers"):
            client.update(
                [1, 1], [1, 1], [0, 0], [0, 0], np.zeros((2, 2)), beta=0, lr=0, group_ids=[0]
            )
        with pytest.raises(ValueError, match="weights has shape"):
            client.update([[1, 1]], [1, 1], [0, 0], [0, 0], np.zeros((2, 2)), beta=0, lr=0)


@pytest.mark.parametrize(
    "body",
    [b"not a safetensors file at all", b"\x04\x00\x00\x00\x00\x00\x00\x00[12]"],
    ids=["garbage", "header-not-an-object"],
)
def test_a_malformed_safetensors_answer_is_a_response_error(sleeps: Sleeps, body: bytes) -> None:
    ok = httpx2.Response(200, content=body, headers={"content-type": "application/x-safetensors"})
    client, script = scripted_client([ok], sleeps, transport="safetensors")
    with pytest.raises(APIResponseError, match="unreadable /update answer"):
        update(client)
    assert len(script.requests) == 1


POLICY_OPTIONS: dict[str, Any] = {
    "policy_loss": "gspo",
    "old_log_probs": np.array([-1.25, -1.75], np.float32),
    "behavior_log_probs": [-1.5, -1.5],
    "sequence_lengths": np.array([3, 5], np.int32),
    "clip_eps_low": 0.2,
    "clip_eps_high": 0.28,
    "dual_clip_c": 3.0,
    "log_ratio_clamp": 10.0,
    "loss_agg": "constant",
    "loss_agg_constant": 16.0,
    "kl_loss_coef": 0.01,
    "kl_loss_type": "k2",
    "kl_loss_clamp": 10.0,
    "tis_mode": "truncate",
    "tis_max": 2.0,
    "tis_min": 0.5,
    "tis_batch_normalize": True,
    "reward_clip": (-1.0, 2.0),
    "baseline": "opo",
    "grpo_scale": "batch",
}


def test_policy_loss_options_travel_as_json_fields(sleeps: Sleeps) -> None:
    client, script = scripted_client([answer(200)], sleeps, transport="json")
    update(client, **POLICY_OPTIONS)
    sent = json.loads(script.requests[0].content)
    assert sent["old_log_probs"] == [-1.25, -1.75]
    assert sent["behavior_log_probs"] == [-1.5, -1.5]
    assert sent["sequence_lengths"] == [3, 5]
    assert sent["reward_clip"] == [-1.0, 2.0]
    scalars = {k: v for k, v in POLICY_OPTIONS.items() if isinstance(v, str | float | bool)}
    assert {k: sent[k] for k in scalars} == scalars


def test_policy_loss_options_travel_as_tensors_and_metadata(sleeps: Sleeps) -> None:
    from rlhf_client._wire import read_safetensors_metadata
    from safetensors.numpy import load

    client, script = scripted_client([answer(200)], sleeps, transport="safetensors")
    update(client, **POLICY_OPTIONS)
    content = script.requests[0].content
    tensors = load(content)
    assert tensors["old_log_probs"].dtype == np.float32
    assert tensors["old_log_probs"].tolist() == [-1.25, -1.75]
    assert tensors["behavior_log_probs"].dtype == np.float64
    assert tensors["sequence_lengths"].dtype == np.int64
    assert tensors["sequence_lengths"].tolist() == [3, 5]
    metadata = read_safetensors_metadata(content)
    assert metadata["reward_clip"] == "[-1.0, 2.0]"
    assert metadata["policy_loss"] == "gspo"
    assert metadata["tis_batch_normalize"] == "true"
    assert metadata["loss_agg_constant"] == "16.0"
    assert set(metadata) | set(tensors) >= set(POLICY_OPTIONS)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"old_log_probs": [0.0]}, r"old_log_probs has shape \(1,\); expected \(2,\)"),
        ({"sequence_lengths": [1.5, 2.0]}, "sequence_lengths must be 2 integers"),
        ({"behavior_log_probs": [0.0, np.nan]}, "behavior_log_probs"),
        ({"reward_clip": [-1, "2"]}, "must be a list of numbers"),
    ],
)
def test_per_sample_options_are_checked_before_sending(
    sleeps: Sleeps, options: dict[str, Any], match: str
) -> None:
    client, script = scripted_client([answer(200)], sleeps)
    with pytest.raises(ValueError, match=match):
        update(client, **options)
    assert script.requests == []
