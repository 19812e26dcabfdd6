"""RLHF on the bandit through the service: sample, call `Client.update`, measure exactly."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rlhf_client._client import Client
from rlhf_client._optimizer import Optimizer
from rlhf_client.demo.bandit import Bandit, make_bandit

__all__ = ["DEFAULT_RUNS", "RunConfig", "StepRecord", "run_demo", "run_one"]

PROMPTS_PER_STEP = 8
SAMPLES_PER_PROMPT = 8
LR = 1.0
# The PPO run: updates per batch of rollouts, AdamW's learning rate, the trainers' clip.
# Weight decay is 0: it pulls the weights towards 0, not towards the reference, and would
# move the optimum w*(beta) that the run is measured against.
PPO_EPOCHS = 4
PPO_LR = 0.01
PPO_MAX_GRAD_NORM = 1.0


@dataclass(frozen=True, slots=True)
class RunConfig:
    """One training run: the KL coefficient, the service's baseline, a constant reward offset."""

    beta: float
    baseline: Literal["none", "mean"] = "mean"
    offset: float = 0.0
    # "pg": one plain update per batch of rollouts; "ppo_adamw": PPO_EPOCHS updates of the
    # clipped surrogate on each batch (old_log_probs from sampling time), stepped by AdamW.
    algorithm: Literal["pg", "ppo_adamw"] = "pg"

    @property
    def label(self) -> str:
        offset = f", reward {self.offset:+g}" if self.offset else ""
        algorithm = f", PPO-clip x{PPO_EPOCHS} + AdamW" if self.algorithm == "ppo_adamw" else ""
        return f"beta {self.beta:g}, baseline {self.baseline}{offset}{algorithm}"


# Three betas with the group baseline; then the +1 offset a sigmoid reward model gives,
# without and with the baseline.
DEFAULT_RUNS = (
    RunConfig(0.0),
    RunConfig(0.05),
    RunConfig(0.2),
    RunConfig(0.2, "none", 1.0),
    RunConfig(0.2, "mean", 1.0),
    RunConfig(0.2, "mean", 0.0, "ppo_adamw"),
)


@dataclass(frozen=True, slots=True)
class StepRecord:
    """The policy after `step` batches of rollouts (`updates` service calls), measured
    exactly, with the service's own statistics of the last call."""

    seed: int
    config: RunConfig
    step: int
    updates: int
    reward: float
    kl: float
    optimal_reward: float
    optimal_kl: float
    service_kl_mean: float
    grad_norm: float


def run_one(
    client: Client,
    bandit: Bandit,
    config: RunConfig,
    *,
    steps: int,
    seed: int,
    on_step: Callable[[], None] = lambda: None,
) -> list[StepRecord]:
    """Train from the reference weights on `steps` batches of rollouts: one service call
    per batch, or PPO_EPOCHS with `config.algorithm` "ppo_adamw"."""
    if config.algorithm == "ppo_adamw":
        return _run_ppo(client, bandit, config, steps=steps, seed=seed, on_step=on_step)
    rng = np.random.default_rng([seed, 1])
    log_ref = bandit.log_policy(bandit.reference_weights)
    rewards = bandit.rewards + config.offset
    if config.beta > 0:
        optimum = bandit.optimal_weights(config.beta)
        best = (bandit.expected_reward(optimum), bandit.kl_to_reference(optimum))
    else:
        best = (bandit.best_reward(), math.inf)
    group_ids = np.repeat(np.arange(PROMPTS_PER_STEP), SAMPLES_PER_PROMPT)
    options: dict[str, Any] = (
        {"baseline": "mean", "group_ids": group_ids} if config.baseline == "mean" else {}
    )

    weights = bandit.reference_weights.copy()
    records = [_measure(bandit, weights, seed, config, (0, 0), best, math.nan, math.nan)]
    for step in range(1, steps + 1):
        log_policy = bandit.log_policy(weights)
        prompts, responses = _sample(rng, log_policy)
        result = client.update(
            weights,
            rewards[prompts, responses],
            log_policy[prompts, responses],
            log_ref[prompts, responses],
            bandit.grad_log_policy(weights, prompts, responses),
            beta=config.beta,
            lr=LR,
            **options,
        )
        weights = result.weights.astype(np.float64)
        stats = result.stats
        records.append(
            _measure(
                bandit, weights, seed, config, (step, step), best, stats.kl_mean, stats.grad_norm
            )
        )
        on_step()
    return records


def _run_ppo(
    client: Client,
    bandit: Bandit,
    config: RunConfig,
    *,
    steps: int,
    seed: int,
    on_step: Callable[[], None],
) -> list[StepRecord]:
    """PPO-clip with AdamW: PPO_EPOCHS updates on each batch, the optimizer state kept by
    `Optimizer` between all of them; the same rollouts' rng as the plain runs."""
    rng = np.random.default_rng([seed, 1])
    log_ref = bandit.log_policy(bandit.reference_weights)
    rewards = bandit.rewards + config.offset
    optimum = bandit.optimal_weights(config.beta)
    best = (bandit.expected_reward(optimum), bandit.kl_to_reference(optimum))
    group_ids = np.repeat(np.arange(PROMPTS_PER_STEP), SAMPLES_PER_PROMPT)
    opt = Optimizer(
        client,
        bandit.reference_weights.copy(),
        lr=PPO_LR,
        beta=config.beta,
        type="adamw",
        weight_decay=0.0,
        options={
            "baseline": config.baseline,
            "group_ids": group_ids,
            "policy_loss": "ppo_clip",
            "max_grad_norm": PPO_MAX_GRAD_NORM,
        },
    )
    records = [_measure(bandit, opt.weights, seed, config, (0, 0), best, math.nan, math.nan)]
    for step in range(1, steps + 1):
        log_policy = bandit.log_policy(opt.weights.astype(np.float64))
        prompts, responses = _sample(rng, log_policy)
        # The log-probs at sampling time: PPO's ratio is taken against them every epoch.
        old = log_policy[prompts, responses]
        for _ in range(PPO_EPOCHS):
            weights = opt.weights.astype(np.float64)
            log_policy = bandit.log_policy(weights)
            result = opt.step(
                {
                    "rewards": rewards[prompts, responses],
                    "policy_log_probs": log_policy[prompts, responses],
                    "ref_log_probs": log_ref[prompts, responses],
                    "log_prob_grads": bandit.grad_log_policy(weights, prompts, responses),
                    "old_log_probs": old,
                }
            )
        stats = result.stats
        weights = opt.weights.astype(np.float64)
        records.append(
            _measure(
                bandit,
                weights,
                seed,
                config,
                (step, step * PPO_EPOCHS),
                best,
                stats.kl_mean,
                stats.grad_norm,
            )
        )
        on_step()
    return records


def run_demo(
    client: Client,
    *,
    steps: int = 200,
    seeds: Sequence[int] = (0, 1, 2),
    runs: Sequence[RunConfig] = DEFAULT_RUNS,
    on_step: Callable[[], None] = lambda: None,
) -> list[StepRecord]:
    """Every run in `runs` on the bandit of every seed in `seeds`."""
    records: list[StepRecord] = []
    for seed in seeds:
        bandit = make_bandit(seed)
        for config in runs:
            records += run_one(client, bandit, config, steps=steps, seed=seed, on_step=on_step)
    return records


def _sample(rng: np.random.Generator, log_policy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PROMPTS_PER_STEP distinct prompts, SAMPLES_PER_PROMPT responses each from the policy."""
    n_prompts, n_responses = log_policy.shape
    chosen = rng.choice(n_prompts, PROMPTS_PER_STEP, replace=False)
    prompts = np.repeat(chosen, SAMPLES_PER_PROMPT)
    cdf = np.exp(log_policy[prompts]).cumsum(axis=1)
    draws = rng.random((len(prompts), 1)) * cdf[:, -1:]
    responses = np.minimum((cdf < draws).sum(axis=1), n_responses - 1)
    return prompts, responses


def _measure(
    bandit: Bandit,
    weights: np.ndarray,
    seed: int,
    config: RunConfig,
    counts: tuple[int, int],
    best: tuple[float, float],
    service_kl_mean: float,
    grad_norm: float,
) -> StepRecord:
    return StepRecord(
        seed=seed,
        config=config,
        step=counts[0],
        updates=counts[1],
        reward=bandit.expected_reward(weights),
        kl=bandit.kl_to_reference(weights),
        optimal_reward=best[0],
        optimal_kl=best[1],
        service_kl_mean=service_kl_mean,
        grad_norm=grad_norm,
    )
