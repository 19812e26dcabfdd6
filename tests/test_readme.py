"""The README documents what the code does: every option, in the stated order of operations."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import AliasChoices

from app.api.body import UPLOAD_BUDGET_BODIES
from app.ops.metrics import UpdateMetrics
from app.settings import Settings
from app.wire.schemas import UpdateOptionsModel, UpdateStatsModel
from tests.helpers.readme import KINDS, fenced_blocks, runnable_blocks

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def table_keys(heading_text: str) -> set[str]:
    """The backticked names in the first column of every table row after `heading_text`."""
    section = README.split(heading_text, 1)[1].split("\n#", 1)[0]
    return {
        name
        for row in re.findall(r"^\| (.+?) \|", section, re.M)
        for name in re.findall(r"`([a-z_0-9]+)`", row)
    }


def test_every_option_has_a_row_in_the_options_tables() -> None:
    documented = table_keys("### Algorithm options") | table_keys("#### Policy loss")
    assert set(UpdateOptionsModel.model_fields) <= documented


def test_every_stat_is_documented() -> None:
    assert set(UpdateStatsModel.model_fields) <= table_keys("Response (`200`")


def test_order_of_operations_is_stated_step_by_step() -> None:
    steps = re.findall(r"^(\d)\. ", README.split("Order of operations:", 1)[1], re.M)[:8]
    assert steps == [str(i) for i in range(8)]


def test_quick_start_shows_the_services_answer(client: TestClient) -> None:
    # In-process, for the inner loop; tests/system/test_readme_examples.py runs it with curl.
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    [(curl, answer)] = runnable_blocks(quick_start)
    request = re.search(r"-d '(\{.+?\})'", curl.text, re.S)
    assert request is not None
    assert answer is not None
    response = client.post("/update", content=request.group(1))
    assert response.status_code == 200
    assert orjson.loads(response.content) == orjson.loads(answer.text)


def test_every_fenced_block_says_what_it_is() -> None:
    unmarked = [block.name for block in fenced_blocks(README) if block.kind not in KINDS]
    assert unmarked == [], (
        "mark each with <!-- readme: run|output|shape --> (tests/helpers/readme.py)"
    )
    # An output block belongs to the runnable block just before it.
    blocks = fenced_blocks(README)
    for before, block in itertools.pairwise(blocks):
        if block.kind == "output":
            assert before.kind == "run", f"{block.name} follows {before.name}, which is not run"


def _first_column(heading_text: str) -> set[str]:
    """Every backticked name in the first column of the table after `heading_text`."""
    section = README.split(heading_text, 1)[1].split("\n#", 1)[0]
    return {
        name
        for row in re.findall(r"^\| (.+?) \|", section, re.M)
        for name in re.findall(r"`([A-Za-z_0-9]+)`", row)
    }


def test_every_setting_has_a_row_in_the_settings_table() -> None:
    variables = {
        str(field.validation_alias.choices[0])
        for field in Settings.model_fields.values()
        if isinstance(field.validation_alias, AliasChoices)
    }
    assert len(variables) == len(Settings.model_fields)
    assert variables <= _first_column("### Settings")


def test_every_metric_has_a_row_in_the_metrics_table() -> None:
    documented = _first_column("### Metrics")
    for family in UpdateMetrics().registry.collect():
        suffix = "_total" if family.type == "counter" else ""
        assert family.name + suffix in documented


def test_the_upload_budget_is_stated_as_it_is_computed() -> None:
    assert f"{UPLOAD_BUDGET_BODIES} x `RLHF_MAX_BODY_SIZE`" in README


# The README writes negative numbers with the minus sign, U+2212.
MINUS = "\u2212"


def test_worked_ppo_example_is_the_services_answer(client: TestClient) -> None:
    example = README.split("Worked example, PPO", 1)[1].split("\n#", 1)[0]
    blocks = re.findall(r"^    (\{.+?\})$", example, re.M | re.S)
    request, answer = orjson.loads(blocks[0]), orjson.loads(blocks[-1])
    response = client.post("/update", json=request)
    assert response.status_code == 200
    assert orjson.loads(response.content) == answer
    # The table's ratios, masks and coefficients, to the digits shown.
    rows = re.findall(r"^\| (\d) \| (.+?) \| (.+?) \| (.+?) \| .+? \| (.+?) \|$", example, re.M)
    assert len(rows) == 4
    for i, advantage, log_ratio, ratio, coefficient in rows:
        k = int(i) - 1
        rho = math.exp(request["policy_log_probs"][k] - request["old_log_probs"][k])
        assert float(log_ratio.replace(MINUS, "-")) == pytest.approx(
            request["policy_log_probs"][k] - request["old_log_probs"][k]
        )
        assert float(ratio) == round(rho, 4)
        a = float(advantage.replace(MINUS, "-"))
        assert a == request["rewards"][k]
        active = (a > 0 and rho <= 1.2) or (a < 0 and rho >= 0.8)
        assert float(coefficient.replace(MINUS, "-")) == (round(a * rho, 4) if active else 0.0)
    shown = re.search(r"grad = \[.+\] = \[(.+?), (.+?)\]", example)
    assert shown is not None
    grad = [float(x.replace(MINUS, "-")) for x in shown.groups()]
    assert grad == [round(w, 4) for w in answer["weights"]]


def test_two_call_optimizer_example_is_the_services_answer(client: TestClient) -> None:
    example = README.split("Worked example, two AdamW calls", 1)[1].split("\n#", 1)[0]
    first, first_answer, second, second_answer = (
        orjson.loads(block) for block in re.findall(r"^    (\{.+?\})$", example, re.M)
    )
    assert client.post("/update", json=first).json() == first_answer
    # The second request is the first with the answer's weights and state sent back.
    assert second == {
        **first,
        "weights": first_answer["weights"],
        "optimizer_state": first_answer["optimizer_state"],
    }
    assert client.post("/update", json=second).json() == second_answer
    # The numbers worked by hand: each step moves a weight by 0.1 / (1 + 2e-8) after the
    # decay by 1 - lr * 0.01 = 0.999.
    move = 0.1 / (1 + 2e-8)
    w1 = 0.999 + move
    w2 = w1 * 0.999 + move
    assert first_answer["weights"][0] == pytest.approx(w1, rel=1e-14)
    assert second_answer["weights"][0] == pytest.approx(w2, rel=1e-14)
    assert f"{w1:.9f}" in example
    assert f"{w2:.9f}" in example
    for answer, m, v in ((first_answer, 0.05, 0.00025), (second_answer, 0.095, 0.00049975)):
        # The README writes the minus sign as U+2212.
        assert f"[{MINUS}{m}, {m}]" in example
        state = answer["optimizer_state"]
        assert state["exp_avg"] == pytest.approx([-m, m], rel=1e-14)
        assert state["exp_avg_sq"] == pytest.approx([v, v], rel=1e-14)
