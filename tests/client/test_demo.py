"""The demo: its exact gradient and optimum, a short run through the app, its outputs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from rlhf_client import Client
from rlhf_client.cli import main
from rlhf_client.demo.bandit import make_bandit
from rlhf_client.demo.report import CSV_COLUMNS
from rlhf_client.demo.run import RunConfig, run_demo

from app.main import create_app
from app.settings import Settings


def test_grad_log_policy_matches_finite_differences() -> None:
    bandit = make_bandit(7, prompts=5, responses=4, dim=3)
    rng = np.random.default_rng(0)
    weights = bandit.reference_weights + rng.standard_normal(9)
    prompts, responses = np.array([0, 2, 4, 4]), np.array([3, 0, 1, 2])
    analytic = bandit.grad_log_policy(weights, prompts, responses)
    h = 1e-6
    numeric = np.empty_like(analytic)
    for j in range(len(weights)):
        step = np.zeros_like(weights)
        step[j] = h
        up = bandit.log_policy(weights + step)[prompts, responses]
        down = bandit.log_policy(weights - step)[prompts, responses]
        numeric[:, j] = (up - down) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("beta", [0.05, 0.2, 1.0])
def test_optimal_weights_are_a_stationary_point_of_the_objective(beta: float) -> None:
    bandit = make_bandit(3)
    optimum = bandit.optimal_weights(beta)

    def objective(w: np.ndarray) -> float:
        return bandit.expected_reward(w) - beta * bandit.kl_to_reference(w)

    h = 1e-5
    basis = np.eye(len(optimum))
    gradient = [(objective(optimum + h * e) - objective(optimum - h * e)) / (2 * h) for e in basis]
    assert np.max(np.abs(gradient)) < 1e-7
    rng = np.random.default_rng(1)
    best = objective(optimum)
    assert all(
        objective(optimum + 0.1 * rng.standard_normal(len(optimum))) < best for _ in range(5)
    )


def test_bandit_is_scaled_as_specified() -> None:
    bandit = make_bandit(0)
    assert bandit.features.shape == (64, 8, 64)
    assert (bandit.features @ bandit.reference_weights).std() == pytest.approx(1.0)
    assert bandit.rewards.std() == pytest.approx(0.25)
    assert bandit.kl_to_reference(bandit.reference_weights) == pytest.approx(0.0, abs=1e-15)


def test_short_run_learns_and_beta_holds_the_policy_near_the_reference(
    settings: Settings,
) -> None:
    runs = (RunConfig(0.0), RunConfig(0.2))
    with TestClient(create_app(settings)) as http, Client(http_client=http) as client:
        records = run_demo(client, steps=40, seeds=(0,), runs=runs)
    free = [r for r in records if r.config.beta == 0.0]
    held = [r for r in records if r.config.beta == 0.2]
    assert [r.step for r in free] == list(range(41))
    assert free[-1].reward - free[0].reward >= 0.1
    assert held[-1].kl < free[-1].kl
    # Every call's statistics are recorded; step 0 is before any call.
    assert np.isnan(free[0].service_kl_mean)
    assert np.isfinite([r.service_kl_mean for r in free[1:]]).all()


def test_demo_command_writes_figure_and_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png, data = tmp_path / "demo.png", tmp_path / "demo.csv"
    argv = ["demo", "--in-process", "--steps", "2", "--seeds", "1", "--no-progress"]
    assert main([*argv, "--png", str(png), "--csv", str(data)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with data.open() as file:
        rows = list(csv.DictReader(file))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 5 * 3  # five runs, steps 0..2
    assert {(r["beta"], r["baseline"], r["offset"]) for r in rows} == {
        ("0.0", "mean", "0.0"),
        ("0.05", "mean", "0.0"),
        ("0.2", "mean", "0.0"),
        ("0.2", "none", "1.0"),
        ("0.2", "mean", "1.0"),
    }
    out = capsys.readouterr().out
    assert "beta 0.2, baseline none, reward +1" in out
