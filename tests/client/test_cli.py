"""`rlhf-update` in-process through `main(argv)`: exit codes, file formats, output."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rlhf_client._files import read_state
from rlhf_client.cli import main
from safetensors.numpy import load_file, save_file

from tests.helpers.optimizers import reference_steps
from tests.helpers.reference import EXAMPLE

NAMES = ("weights", "rewards", "policy_log_probs", "ref_log_probs", "log_prob_grads")


def example_arrays() -> dict[str, np.ndarray]:
    return {name: np.asarray(EXAMPLE[name], dtype=np.float64) for name in NAMES}


def stats_line(err: str) -> dict[str, Any]:
    stats: dict[str, Any] = json.loads(err.strip().splitlines()[-1])
    return stats


def test_npz_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, target = tmp_path / "batch.npz", tmp_path / "new.npz"
    entries: dict[str, Any] = {**example_arrays(), "beta": np.float64(1.0), "lr": np.float64(0.1)}
    np.savez(source, **entries)
    assert main(["update", "--in-process", "--in", str(source), "--out", str(target)]) == 0
    with np.load(target) as out:
        assert out["weights"].tolist() == pytest.approx([1.05, 0.95], abs=1e-15)
    assert stats_line(capsys.readouterr().err)["reward_mean"] == 1.0


def test_safetensors_round_trip_with_flags_winning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = tmp_path / "batch.safetensors", tmp_path / "new.safetensors"
    # The file says lr 0.5; the flag's 0.1 wins.
    save_file({**example_arrays(), "beta": np.array(1.0), "lr": np.array(0.5)}, str(source))
    argv = ["update", "--in-process", "--in", str(source), "--out", str(target), "--lr", "0.1"]
    assert main(argv) == 0
    assert load_file(str(target))["weights"].tolist() == pytest.approx([1.05, 0.95], abs=1e-15)


def test_json_round_trip_with_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, target = tmp_path / "batch.json", tmp_path / "new.json"
    source.write_text(json.dumps({**EXAMPLE, "rewards": [1.0, 3.0], "group_ids": [0, 0]}))
    argv = ["update", "--in-process", "--in", str(source), "--out", str(target)]
    assert main([*argv, "--option", "baseline=mean", "--option", "max_grad_norm=10"]) == 0
    # Adjusted rewards [1, 3], group mean 2: advantages [-1, 1] and grad = mean(A_i g_i) = 0.
    assert json.loads(target.read_text()) == {"weights": [1.0, 1.0]}
    stats = stats_line(capsys.readouterr().err)
    assert stats["advantage_mean"] == 0.0
    assert stats["clipped"] is False


def test_npz_with_per_sample_options_and_a_reward_clip_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = tmp_path / "batch.npz", tmp_path / "new.json"
    arrays = {**example_arrays(), "beta": np.array(1.0), "lr": np.array(0.1)}
    entries: dict[str, Any] = {
        **arrays,
        "old_log_probs": np.array([-1.5, -1.5]),
        "sequence_lengths": np.array([2, 3]),
        "reward_clip": np.array([-0.5, 0.5]),
    }
    np.savez(source, **entries)
    argv = ["update", "--in-process", "--in", str(source), "--out", str(target)]
    assert main([*argv, "--option", "policy_loss=gspo"]) == 0
    # Rewards clipped to 0.5, on-policy ratios 1, seq_mean_token_mean: each sample's
    # gradient weighs 1 / (B L_i): w = 1 + 0.1 * 0.5 * (1/4 + 1/6) * [0.5, -0.5].
    step = 0.1 * 0.5 * (1 / 4 + 1 / 6) * 0.5
    assert json.loads(target.read_text())["weights"] == pytest.approx([1 + step, 1 - step])
    stats = stats_line(capsys.readouterr().err)
    assert stats["ratio_mean"] == 1.0
    assert stats["reward_mean"] == 0.5


def test_stdin_to_stdout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(json.dumps(EXAMPLE).encode()))
    monkeypatch.setattr("sys.stdin", stdin)
    assert main(["update", "--in-process", "--in", "-", "--out", "-"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["weights"] == pytest.approx([1.05, 0.95], abs=1e-15)
    assert "kl_mean" in stats_line(out.err)


def test_rejected_by_the_server_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "batch.json"
    source.write_text(json.dumps({**EXAMPLE, "beta": -1.0}))
    argv = ["update", "--in-process", "--in", str(source), "--out", str(tmp_path / "new.json")]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "422 Invalid payload" in err
    assert "beta is -1.0; expected a number >= 0" in err
    assert not (tmp_path / "new.json").exists()


def test_unreachable_server_exits_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = tmp_path / "batch.json"
    source.write_text(json.dumps(EXAMPLE))
    argv = ["--base-url", f"http://127.0.0.1:{port}", "--max-retries", "0", "update"]
    assert main([*argv, "--in", str(source), "--out", str(tmp_path / "new.json")]) == 4
    assert "could not reach the server" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["update", "--in", "batch.csv", "--out", "-"], "unknown format .csv", id="suffix"
        ),
        pytest.param(["update", "--in", "missing.json", "--out", "-"], "cannot read", id="missing"),
        pytest.param(["update", "--out", "-"], "--in", id="no-input"),
        pytest.param(["frobnicate"], "invalid choice", id="command"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_missing_beta_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "batch.json"
    source.write_text(json.dumps({k: v for k, v in EXAMPLE.items() if k != "beta"}))
    assert main(["update", "--in-process", "--in", str(source), "--out", "-"]) == 2
    assert "beta is missing" in capsys.readouterr().err


def test_health(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "--in-process"]) == 0
    assert json.loads(capsys.readouterr().out) == {"status": "ok"}


@pytest.mark.parametrize("command", [[], ["update"], ["health"], ["demo"]])
def test_help_shows_examples(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "example" in out
    assert "rlhf-update" in out


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".json"])
def test_the_optimizer_state_goes_out_and_back_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    source = tmp_path / "batch.json"
    source.write_text(json.dumps(EXAMPLE))
    state = tmp_path / f"state{suffix}"
    optimizer = ["--option", 'optimizer={"type": "adamw"}']
    first = ["update", "--in-process", "--in", str(source), "--out", str(tmp_path / "w1.json")]
    assert main([*first, "--state-out", str(state), *optimizer]) == 0
    assert stats_line(capsys.readouterr().err)["optimizer_step"] == 1
    # The second step from the first's weights and state.
    weights = json.loads((tmp_path / "w1.json").read_text())["weights"]
    source.write_text(json.dumps({**EXAMPLE, "weights": weights}))
    second = ["update", "--in-process", "--in", str(source), "--out", str(tmp_path / "w2.json")]
    assert main([*second, "--state-in", str(state), "--state-out", str(state), *optimizer]) == 0
    assert stats_line(capsys.readouterr().err)["optimizer_step"] == 2
    # The example's gradient is [0.5, -0.5] whatever the weights.
    expected, expected_state = reference_steps(
        np.asarray(EXAMPLE["weights"]), [np.array([0.5, -0.5])] * 2, 0.1, {"type": "adamw"}
    )
    got = json.loads((tmp_path / "w2.json").read_text())["weights"]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert (
        main([*second, "--state-in", str(state), "--out", str(tmp_path / "w3.json"), *optimizer])
        == 0
    )
    capsys.readouterr()
    written = read_state(str(state))
    assert written["step"] == 2
    np.testing.assert_allclose(written["exp_avg"], expected_state["exp_avg"], rtol=1e-12)
    np.testing.assert_allclose(written["exp_avg_sq"], expected_state["exp_avg_sq"], rtol=1e-12)


def test_a_state_flag_without_an_optimizer_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "batch.json"
    source.write_text(json.dumps(EXAMPLE))
    argv = ["update", "--in-process", "--in", str(source), "--out", str(tmp_path / "w.json")]
    assert main([*argv, "--state-out", str(tmp_path / "state.json")]) == 2
    assert "--state-in and --state-out need an optimizer" in capsys.readouterr().err


def test_a_state_file_with_a_foreign_entry_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, state = tmp_path / "batch.json", tmp_path / "state.json"
    source.write_text(json.dumps(EXAMPLE))
    state.write_text(json.dumps({"step": 1, "velocity": [0.0, 0.0]}))
    argv = ["update", "--in-process", "--in", str(source), "--out", str(tmp_path / "w.json")]
    optimizer = ["--option", 'optimizer={"type": "sgd", "momentum": 0.9}']
    assert main([*argv, "--state-in", str(state), *optimizer]) == 2
    assert "has velocity; an optimizer state holds step and" in capsys.readouterr().err
