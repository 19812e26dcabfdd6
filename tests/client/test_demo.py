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
from rlhf_client.demo.report import CAPTION, CSV_COLUMNS, figure, reached_at
from rlhf_client.demo.run import PPO_EPOCHS, RunConfig, run_demo

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
    assert len(rows) == 6 * 3  # six runs, steps 0..2
    assert {(r["beta"], r["baseline"], r["offset"], r["algorithm"]) for r in rows} == {
        ("0.0", "mean", "0.0", "pg"),
        ("0.05", "mean", "0.0", "pg"),
        ("0.2", "mean", "0.0", "pg"),
        ("0.2", "none", "1.0", "pg"),
        ("0.2", "mean", "1.0", "pg"),
        ("0.2", "mean", "0.0", "ppo_adamw"),
    }
    # PPO makes PPO_EPOCHS updates on each batch of rollouts.
    ppo = [r for r in rows if r["algorithm"] == "ppo_adamw"]
    assert [(r["step"], r["updates"]) for r in ppo] == [("0", "0"), ("1", "4"), ("2", "8")]
    out = capsys.readouterr().out
    assert "beta 0.2, baseline none, reward +1" in out


def test_the_figure_explains_itself(settings: Settings) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.lines import Line2D

    with TestClient(create_app(settings)) as http, Client(http_client=http) as client:
        records = run_demo(client, steps=3, seeds=(0,))
    fig = figure(records)
    axes = fig.axes
    assert len(axes) == 6
    reward_axes, kl_axes = axes[0::2], axes[1::2]
    assert all("reward" in ax.get_ylabel() for ax in reward_axes)
    assert all("(nats)" in ax.get_ylabel() for ax in kl_axes)
    # One colour per beta, the same in both rows; different betas, different colours.
    colour_of: dict[str, set[str]] = {}
    for ax in axes:
        for line in ax.get_lines():
            if line.get_linestyle() in ("-", ":"):
                beta = str(line.get_label()).split(",")[0]
                colour_of.setdefault(beta, set()).add(str(line.get_color()))
    assert set(colour_of) == {"beta 0", "beta 0.05", "beta 0.2"}
    assert all(len(colours) == 1 for colours in colour_of.values())
    assert len({next(iter(c)) for c in colour_of.values()}) == 3
    # Each distinct optimum is drawn once per panel: in the lower rows both runs share one.
    expected_optima = [3, 2, 1, 1, 1, 1]  # beta 0's KL optimum is infinite, so not drawn
    dashed = [[ln for ln in ax.get_lines() if ln.get_linestyle() == "--"] for ax in axes]
    assert [len(lines) for lines in dashed] == expected_optima
    for lines in dashed:
        values = [line.get_ydata()[0] for line in lines]
        assert len(set(values)) == len(values)
    # The key explains solid, dotted and dashed lines; the caption, the run above its optimum.
    [key] = fig.legends
    styles = {
        h.get_linestyle(): t.get_text()
        for h, t in zip(key.legend_handles, key.get_texts(), strict=True)
        if isinstance(h, Line2D)
    }
    assert "measured" in styles["-"]
    assert "no baseline" in styles[":"]
    assert "PPO-clip" in styles["-."]
    assert "optimum" in styles["--"]
    assert CAPTION in [" ".join(t.get_text().split()) for t in fig.texts]
    assert "ends above its optimum" in CAPTION


def test_the_ppo_run_steps_adamw_several_times_per_batch_and_learns(settings: Settings) -> None:
    runs = (RunConfig(0.2, algorithm="ppo_adamw"),)
    with TestClient(create_app(settings)) as http, Client(http_client=http) as client:
        records = run_demo(client, steps=30, seeds=(0,), runs=runs)
    assert [r.updates for r in records] == [PPO_EPOCHS * r.step for r in records]
    # From a reward of about 0.01 at the reference to within reach of the optimum's 0.19.
    assert records[0].reward < 0.05
    assert records[-1].reward > 0.15
    assert records[-1].kl < 2 * records[-1].optimal_kl


def test_reached_at_reads_the_objective_gap() -> None:
    config = RunConfig(0.5)
    # Objective r - 0.5 KL: 0, 0.5, 0.97, 0.9, 0.99, 1.0 against an optimum of 1.
    curves = {
        "reward": np.array([0.0, 0.5, 0.97, 0.9, 0.99, 1.0]),
        "kl": np.zeros(6),
        "optimal_reward": np.full(6, 1.5),
        "optimal_kl": np.full(6, 1.0),
    }
    assert reached_at(config, curves) == (2, 4)
    assert reached_at(RunConfig(0.0), curves) == (None, None)
