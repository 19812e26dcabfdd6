"""The demo's outputs: a CSV of every measurement, a PNG of the curves, a text summary."""

from __future__ import annotations

import csv
import math
import textwrap
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_client.demo.run import DEFAULT_RUNS, PPO_EPOCHS, RunConfig, StepRecord

__all__ = ["CAPTION", "REACHED_GAP", "figure", "plot", "reached_at", "summarize", "write_csv"]

CSV_COLUMNS = (
    "seed",
    "beta",
    "baseline",
    "offset",
    "algorithm",
    "step",
    "updates",
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
                    r.config.algorithm,
                    r.step,
                    r.updates,
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


# A run has reached its optimum when its objective E[r] - beta KL has closed all but this
# fraction of the gap between the reference's objective and the optimum's.
REACHED_GAP = 0.05


def summarize(records: Sequence[StepRecord]) -> str:
    """The last step of each run, averaged over seeds, against its optimum; and for beta > 0
    the first batch of rollouts within REACHED_GAP of the optimum, and the batch from which
    the run stays within it."""
    lines = [
        f"{'run':<46} {'reward':>7} {'optimum':>8} {'KL':>7} {'optimum':>8} "
        f"{'within 5%':>10} {'stays':>6}"
    ]
    for config, curves in _by_run(records).items():
        last = {name: curve[-1] for name, curve in curves.items()}
        best_kl = f"{last['optimal_kl']:8.3f}" if math.isfinite(last["optimal_kl"]) else "       -"
        first, stays = reached_at(config, curves)
        lines.append(
            f"{config.label:<46} {last['reward']:7.3f} {last['optimal_reward']:8.3f} "
            f"{last['kl']:7.3f} {best_kl} {_batch(first):>10} {_batch(stays):>6}"
        )
    return "\n".join(lines)


def reached_at(config: RunConfig, curves: dict[str, np.ndarray]) -> tuple[int | None, int | None]:
    """For the seed-mean curves: the first batch whose objective E[r] - beta KL is within
    REACHED_GAP of the optimum's (relative to the reference's gap), and the batch from which
    it stays within; None for beta 0, or when never."""
    if config.beta == 0:
        return None, None
    objective = curves["reward"] - config.beta * curves["kl"]
    best = curves["optimal_reward"][-1] - config.beta * curves["optimal_kl"][-1]
    inside = np.abs((best - objective) / (best - objective[0])) <= REACHED_GAP
    if not inside.any():
        return None, None
    first = int(np.argmax(inside))
    outside = np.flatnonzero(~inside)
    stays = 0 if outside.size == 0 else int(outside[-1]) + 1
    return first, stays if stays < len(inside) else None


def _batch(value: int | None) -> str:
    return "-" if value is None else str(value)


# Why the run without baseline can end above "its" optimum: shown under the figure, and
# said in the README.
CAPTION = (
    "Why the dotted run ends above its optimum: the dashed line maximises reward - beta * KL; "
    "it is not a ceiling on reward or KL. Without a baseline the +1 offset is multiplied into "
    "every sampled gradient; its mean is zero, but at lr 1 it adds noise to each step (the "
    "offset is four times the rewards' std of 0.25). The weights then wander around "
    "w*(0.2), and KL, which grows in every direction away from the reference, ends higher "
    "(here the reward too), while the objective reward - 0.2 KL stays below the optimum's. "
    "The group mean baseline removes the offset exactly: its run is the beta 0.2 run of "
    "the top row. Bottom row: PPO-clip with 4 AdamW updates per batch (lr 0.01, betas "
    "(0.9, 0.999), no weight decay, gradient clip 1) comes within 5% of the optimum's "
    "objective after as many batches as the plain step (22): no fewer rollouts on this "
    "problem, where lr 1 is already tuned; at a constant lr AdamW's normalised steps then "
    "keep it 2 to 5% off (KL above the optimum's), while the plain step settles on it."
)
_LINE_STYLES = {"mean": "-", "none": ":"}


def plot(records: Sequence[StepRecord], path: Path) -> None:
    """Write the figure of `records` to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = figure(records)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure(records: Sequence[StepRecord]) -> Any:
    """Reward and KL per beta against their optima (top); the +1 offset runs (bottom).

    One colour per beta in both rows; solid lines: measured, with the group mean baseline;
    dotted: no baseline; dashed: the analytic optimum of that beta, drawn once per panel
    and labelled with its value.
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    runs = _by_run(records)
    colours = {beta: f"C{i}" for i, beta in enumerate(sorted({c.beta for c in runs}))}
    plain = [c for c in runs if c.algorithm == "pg"]
    ppo = [c for c in runs if c.algorithm != "pg"]
    # The last row sets each PPO run beside the plain run of its beta.
    compared = [c for c in plain if c.offset == 0 and c.beta in {p.beta for p in ppo}]
    rows_of_runs = [
        row
        for row in (
            [c for c in plain if c.offset == 0],
            [c for c in plain if c.offset != 0],
            [*compared, *ppo] if ppo else [],
        )
        if row
    ]
    rows = len(rows_of_runs)
    fig, axes = plt.subplots(rows, 2, figsize=(11, 3.9 * rows + 1.4), squeeze=False)
    seeds = len({r.seed for r in records})
    for row, configs in enumerate(rows_of_runs):
        optima: dict[str, dict[float, float]] = {"reward": {}, "kl": {}}
        for config in configs:
            colour, curves = colours[config.beta], runs[config]
            steps = np.arange(len(curves["reward"]))
            for ax, name in zip(axes[row], ("reward", "kl"), strict=True):
                ax.plot(
                    steps,
                    curves[name],
                    color=colour,
                    linestyle=_line_style(config),
                    label=config.label,
                )
                ax.fill_between(
                    steps, curves[name + "_lo"], curves[name + "_hi"], color=colour, alpha=0.15
                )
                best = curves["optimal_" + name][-1]
                if math.isfinite(best):
                    optima[name][config.beta] = best
        for ax, name in zip(axes[row], ("reward", "kl"), strict=True):
            _draw_optima(ax, optima[name], colours)
    titles = [_titles(configs) for configs in rows_of_runs]
    for row in range(rows):
        for ax, title in zip(axes[row], titles[row], strict=True):
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("batches of rollouts (64 each)")
            ax.grid(alpha=0.3)
        axes[row][0].set_ylabel("expected reward E[r] (reward units)")
        axes[row][1].set_ylabel("KL(pi || pi_ref) (nats)")
        axes[row][0].legend(
            fontsize=8, loc="lower right", title="run (colour: beta)", title_fontsize=8
        )
    key = [
        Line2D([], [], color="0.3", linestyle="-", label="measured, group mean baseline"),
        Line2D([], [], color="0.3", linestyle=":", label="measured, no baseline"),
        Line2D(
            [],
            [],
            color="0.3",
            linestyle="-.",
            label=f"measured, PPO-clip, {PPO_EPOCHS} AdamW updates per batch",
        ),
        Line2D(
            [],
            [],
            color="0.3",
            linestyle="--",
            linewidth=1,
            label="analytic optimum w* = w0 + theta / beta (beta 0: best achievable reward)",
        ),
        Rectangle(
            (0, 0),
            1,
            1,
            color="0.3",
            alpha=0.15,
            label=f"band: min to max over {seeds} seed{'s' if seeds > 1 else ''} (lines: mean)",
        ),
    ]
    fig.suptitle("RLHF through the service on a contextual bandit", fontsize=11, y=0.99)
    fig.legend(
        handles=key,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.965),
        ncol=2,
        fontsize=8,
        frameon=False,
    )
    bottom = 0.0
    if rows > 1:
        caption = textwrap.fill(CAPTION, 160)
        fig.text(0.5, 0.008, caption, ha="center", va="bottom", fontsize=8)
        # Room for the caption: about 0.16 inch a line of 8 points, and a margin.
        bottom = (0.16 * (caption.count("\n") + 1) + 0.15) / fig.get_figheight()
    fig.tight_layout(rect=(0, bottom, 1, 0.915))
    return fig


def _titles(configs: Sequence[RunConfig]) -> tuple[str, str]:
    """The titles of a row of panels: reward, then KL."""
    if any(c.algorithm != "pg" for c in configs):
        what = "PPO-clip + AdamW against one plain step per batch: "
        return what + "expected reward", what + "KL(pi || pi_ref)"
    if any(c.offset != 0 for c in configs):
        return "Reward +1 offset: expected reward", "Reward +1 offset: KL(pi || pi_ref)"
    return "Expected reward (exact)", "KL(pi || pi_ref) (exact)"


def _line_style(config: RunConfig) -> str:
    if config.algorithm != "pg":
        return "-."
    return _LINE_STYLES.get(config.baseline, "-.")


def _draw_optima(ax: Any, optima: dict[float, float], colours: dict[float, str]) -> None:
    """One dashed line per beta's optimum, each labelled at the right edge with its value."""
    for beta, value in optima.items():
        ax.axhline(value, color=colours[beta], linestyle="--", linewidth=1)
        ax.annotate(
            f"{value:.3f}",
            xy=(1, value),
            xycoords=("axes fraction", "data"),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
            color=colours[beta],
        )


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
