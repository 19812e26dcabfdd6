"""`rlhf-update` as a newcomer meets it: formats checked first, flags in either place, a
sample batch to start from, a hint on a JSON 413, the demo's missing matplotlib."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, Literal

import httpx2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from rlhf_client import Client, ContentTooLargeError
from rlhf_client._progress import ProgressTransport
from rlhf_client.cli import main

from app.main import create_app
from app.settings import Settings
from scripts.live_server import free_port
from tests.helpers.reference import reference_options_update


def _closed_url() -> str:
    """A URL nobody listens on: a command that connects to it exits 4, not 2."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".json"])
def test_example_writes_a_batch_that_update_reads(
    suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch, new = tmp_path / f"batch{suffix}", tmp_path / "new.json"
    assert main(["example", "--out", str(batch)]) == 0
    argv = ["update", "--in-process", "--in", str(batch), "--out", str(new)]
    assert main([*argv, "--option", "baseline=mean"]) == 0
    # What the file holds, read back independently of the client's reader.
    if suffix == ".json":
        entries: dict[str, Any] = json.loads(batch.read_text())
    elif suffix == ".npz":
        with np.load(batch) as npz:
            entries = {name: npz[name].tolist() for name in npz.files}
    else:
        from safetensors.numpy import load_file

        entries = {name: array.tolist() for name, array in load_file(str(batch)).items()}
    expected = reference_options_update(
        entries["weights"],
        entries["rewards"],
        entries["policy_log_probs"],
        entries["ref_log_probs"],
        entries["log_prob_grads"],
        beta=float(entries["beta"]),
        lr=float(entries["lr"]),
        baseline="mean",
        group_ids=entries["group_ids"],
    )
    weights = json.loads(new.read_text())["weights"]
    assert weights == pytest.approx(expected.weights, rel=1e-14)
    assert len(entries["rewards"]) == 4
    assert len(weights) == 3


def test_example_to_stdout_is_an_update_request(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["example", "--out", "-"]) == 0
    body = json.loads(capsys.readouterr().out)
    with TestClient(create_app(Settings())) as client:
        assert client.post("/update", json=body).status_code == 200


@pytest.mark.parametrize(
    ("input_name", "output_name"), [("batch.npz", "new.txt"), ("batch.csv", "new.json")]
)
def test_an_unknown_format_is_refused_before_any_upload(
    input_name: str, output_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["example", "--out", str(tmp_path / "batch.npz")]) == 0
    capsys.readouterr()
    argv = ["--base-url", _closed_url(), "update"]
    argv += ["--in", str(tmp_path / input_name), "--out", str(tmp_path / output_name)]
    assert main(argv) == 2  # not 4: the server was never contacted
    err = capsys.readouterr().err
    assert "unknown format" in err
    assert "expected .npz, .safetensors, .json or -" in err
    assert "could not reach" not in err


def test_global_flags_work_before_and_after_the_subcommand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--in-process", "health"]) == 0
    assert main(["health", "--in-process"]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == [
        {"status": "ok"}
    ] * 2
    # After the subcommand, and a flag given before it is kept when not repeated.
    assert main(["health", "--base-url", _closed_url(), "--max-retries", "0"]) == 4
    assert "could not reach the server after 1 attempt" in capsys.readouterr().err
    assert main(["--max-retries", "0", "health", "--base-url", _closed_url()]) == 4
    assert "after 1 attempt" in capsys.readouterr().err
    assert main(["--max-retries", "0", "health", "--max-retries", "1"]) == 4
    assert "after 2 attempts" in capsys.readouterr().err


def _large_json_batch(path: Path, params: int) -> None:
    rng = np.random.default_rng(0)
    body = {
        "weights": rng.standard_normal(params).tolist(),
        "rewards": [1.0, 0.5],
        "policy_log_probs": [-1.0, -2.0],
        "ref_log_probs": [-1.0, -2.0],
        "log_prob_grads": rng.standard_normal((2, params)).tolist(),
        "beta": 0.1,
        "lr": 0.01,
    }
    path.write_text(json.dumps(body))


def test_a_413_on_a_json_upload_says_to_use_safetensors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLHF_MAX_BODY_SIZE", "20000")
    source, target = tmp_path / "batch.json", tmp_path / "new.json"
    _large_json_batch(source, 600)  # about 36 kB as JSON, 14 kB as safetensors
    argv = ["update", "--in-process", "--in", str(source), "--out", str(target)]
    assert main([*argv, "--transport", "json"]) == 3
    err = capsys.readouterr().err
    assert "413" in err
    assert "send it as safetensors" in err
    assert "--transport safetensors" in err
    assert main([*argv, "--transport", "safetensors"]) == 0


def test_the_client_hints_at_safetensors_only_for_a_json_body() -> None:
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((2, 600))  # 1200 floats: about 24 kB as JSON, 9.6 kB binary
    arrays = [grads[0], np.ones(2), np.full(2, -1.0), np.full(2, -1.0), grads]
    hints = {}
    cases: tuple[tuple[Literal["json", "safetensors"], int], ...] = (
        ("json", 20000),
        ("safetensors", 2000),
    )
    for transport, limit in cases:
        app = create_app(Settings(max_body_size=limit))
        with (
            TestClient(app) as http,
            Client(http_client=http, transport=transport) as client,
            pytest.raises(ContentTooLargeError) as error,
        ):
            client.update(*arrays, beta=0.1, lr=0.01)
        hints[transport] = error.value.hint
        assert (hints[transport] or "") in str(error.value)
    assert "send it as safetensors" in (hints["json"] or "")
    assert hints["safetensors"] is None


def test_demo_without_matplotlib_says_how_to_install_it_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    find_spec = importlib.util.find_spec

    def without_matplotlib(name: str, package: str | None = None) -> Any:
        return None if name == "matplotlib" else find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_matplotlib)
    # Against nobody: had it started training, it would exit 4 on the first update.
    argv = ["--base-url", _closed_url(), "demo", "--png", str(tmp_path / "d.png")]
    assert main([*argv, "--csv", str(tmp_path / "d.csv")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'rlhf-update-client[demo]'" in err
    assert not (tmp_path / "d.csv").exists()


def test_large_uploads_go_in_chunks_with_a_progress_bar(
    capsys: pytest.CaptureFixture[str],
) -> None:
    received: list[tuple[int, int, bytes]] = []

    def server(request: httpx2.Request) -> httpx2.Response:
        assert isinstance(request.stream, httpx2.SyncByteStream)
        chunks = list(request.stream)
        received.append((len(chunks), int(request.headers["content-length"]), b"".join(chunks)))
        return httpx2.Response(200)

    body = np.random.default_rng(0).bytes(5 << 20)
    with httpx2.Client(transport=ProgressTransport(httpx2.MockTransport(server), 4 << 20)) as http:
        http.post("http://service/update", content=body)
        shown = capsys.readouterr().err
        http.post("http://service/update", content=b"small")
    [(chunks, length, data), small] = received
    assert data == body
    assert length == len(body)
    assert chunks == 5
    assert "upload /update" in shown
    assert "5.00M" in shown
    assert small == (1, 5, b"small")
    assert capsys.readouterr().err == ""
