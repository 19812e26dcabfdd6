"""The demo's outputs: a CSV of every measurement, a PNG of the curves, a text summary."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rlhf_client.demo.run import DEFAULT_RUNS, RunConfig, StepRecord

__all__ = ["plot", "summarize", "write_csv"]

CSV_COLUMNS = (
    "seed",
    "beta",
    "baseline",
    "offset",
    "step",
    "reward",
    "kl",
    "optimal_reward",
    "optimal_kl",
    "service_kl_mean",
    "grad_norm",
)


def write_csv(records: Sequence[StepRecord], path: Path) -> None:
    """One row per run and step; the optimal KL of beta 0 (infinite) and the service's
    statistics of step 0 (no call yet) are empty."""
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(CSV_COLUMNS)
        for r in records:
            writer.writerow(
                [
                    r.seed,
                    r.config.beta,
                    r.config.baseline,
                    r.config.offset,
                    r.step,
                    *(
                        _cell(x)
                        for x in (
                            r.reward,
                            r.kl,
                            r.optimal_reward,
                            r.optimal_kl,
                            r.service_kl_mean,
                            r.grad_norm,
                        )
                    ),
                ]
            )


def summarize(records: Sequence[StepRecord]) -> str:
    """The last step of each run, averaged over seeds, against its optimum."""
    lines = [f"{'run':<36} {'reward':>7} {'optimum':>8} {'KL':>7} {'optimum':>8}"]
    for config, curves in _by_run(records).items():
        last = {name: curve[-1] for name, curve in curves.items()}
        best_kl = f"{last['optimal_kl']:8.3f}" if math.isfinite(last["optimal_kl"]) else "       -"
        lines.append(
            f"{config.label:<36} {last['reward']:7.3f} {last['optimal_reward']:8.3f} "
            f"{last['kl']:7.3f} {best_kl}"
        )
    return "\n".join(lines)


def plot(records: Sequence[StepRecord], path: Path) -> None:
    """Reward and KL per beta with the optima dashed (top); the +1 offset runs (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = _by_run(records)
    betas = [c for c in runs if c.offset == 0]
    offsets = [c for c in runs if c.offset != 0]
    rows = 2 if offsets else 1
    fig, axes = plt.subplots(rows, 2, figsize=(11, 4.2 * rows), squeeze=False)
    seeds = len({r.seed for r in records})
    for row, configs in enumerate([betas, offsets][:rows]):
        for i, config in enumerate(configs):
            color = f"C{i}"
            curves = runs[config]
            steps = np.arange(len(curves["reward"]))
            for ax, name in zip(axes[row], ("reward", "kl"), strict=True):
                ax.plot(steps, curves[name], color=color, label=config.label)
                ax.fill_between(
                    steps, curves[name + "_lo"], curves[name + "_hi"], color=color, alpha=0.15
                )
                best = curves["optimal_" + name][-1]
                if math.isfinite(best):
                    ax.axhline(best, color=color, linestyle="--", linewidth=1)
    titles = (
        ("Expected reward (exact)", "KL(pi || pi_ref) (exact)"),
        ("Reward +1 offset: expected reward", "Reward +1 offset: KL(pi || pi_ref)"),
    )
    for row in range(rows):
        for ax, title in zip(axes[row], titles[row], strict=True):
            ax.set_title(title)
            ax.set_xlabel("update step")
            ax.grid(alpha=0.3)
        axes[row][0].legend(fontsize=8, loc="lower right")
    fig.suptitle(
        f"RLHF through the service on a contextual bandit (mean of {seeds} seed"
        f"{'s' if seeds > 1 else ''}, band: min to max; dashed: analytic optimum "
        "w* = w0 + theta / beta; beta 0: best achievable reward)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _by_run(records: Sequence[StepRecord]) -> dict[RunConfig, dict[str, np.ndarray]]:
    """Per run: the seed mean of each quantity by step, plus `_lo`/`_hi` across seeds."""
    grouped: dict[RunConfig, dict[int, list[StepRecord]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        grouped[r.config][r.seed].append(r)
    order = {c: i for i, c in enumerate(DEFAULT_RUNS)}
    result: dict[RunConfig, dict[str, np.ndarray]] = {}
    for config in sorted(grouped, key=lambda c: order.get(c, len(order))):
        per_seed = list(grouped[config].values())
        curves: dict[str, np.ndarray] = {}
        for name in ("reward", "kl", "optimal_reward", "optimal_kl"):
            table = np.array([[getattr(r, name) for r in run] for run in per_seed])
            curves[name] = table.mean(axis=0)
            curves[name + "_lo"] = table.min(axis=0)
            curves[name + "_hi"] = table.max(axis=0)
        result[config] = curves
    return result


def _cell(value: float) -> str:
    return repr(value) if math.isfinite(value) else ""
