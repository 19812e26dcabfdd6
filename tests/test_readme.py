"""The README documents what the code does: every option, in the stated order of operations."""

from __future__ import annotations

import math
import re
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from app.wire.schemas import UpdateOptionsModel, UpdateStatsModel

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
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    request = re.search(r"-d '(\{.+?\})'", quick_start, re.S)
    answer = re.search(r"^answers\n\n    (\{.+\})$", quick_start, re.M)
    assert request is not None
    assert answer is not None
    response = client.post("/update", content=request.group(1))
    assert response.status_code == 200
    assert orjson.loads(response.content) == orjson.loads(answer.group(1))


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
