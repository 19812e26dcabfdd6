"""deploy/grafana: a valid dashboard whose every query names what the service exports.

The metric names, and the labels queries group or match by, are read from a real scrape of
the app after updates that succeed and updates that are refused.
"""

from __future__ import annotations

import json
from typing import Any

import promql_parser
import pytest

from tests.helpers.deploy import DEPLOY, exported_series

DASHBOARD = DEPLOY / "grafana" / "rlhf-update.json"
# Labels Prometheus itself attaches to every scraped series (and Kubernetes service
# discovery's usual relabelling), which a query may group or filter by.
TARGET_LABELS = {"job", "instance", "namespace", "pod"}
# Grafana's built-in interval variables, as a duration PromQL parses.
GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
# What the dashboard is for: each of these families appears in at least one query.
REQUIRED = {
    "rlhf_update_requests_total": "update rate",
    "rlhf_update_duration_seconds_bucket": "latency percentiles",
    "rlhf_update_request_bytes_bucket": "body sizes",
    "rlhf_update_rejected_total": "rejections by reason",
    "rlhf_update_queued": "queue",
    "rlhf_update_kl_mean_bucket": "kl_mean over time",
    "rlhf_update_in_flight": "in flight",
    "rlhf_update_block_requests_total": "sharded-update blocks",
    "rlhf_update_block_duration_seconds_bucket": "block latency",
}


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    return exported_series()


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return dashboard


def _queries() -> list[str]:
    dashboard = _dashboard()
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queries += [
        variable["definition"].removeprefix("label_values(").split(",")[0]
        for variable in dashboard["templating"]["list"]
        if variable["type"] == "query"
    ]
    return queries


def _parse(query: str) -> promql_parser.Expr:
    for variable, duration in GRAFANA_INTERVALS.items():
        query = query.replace(variable, duration)
    return promql_parser.parse(query)


def _selectors_and_groupings(query: str) -> tuple[list[Any], list[list[str]]]:
    selectors: list[Any] = []
    groupings: list[list[str]] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            selectors.append(node)
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            groupings.append(list(node.modifier.labels))

    promql_parser.walk(_parse(query), visit)
    return selectors, groupings


def test_the_dashboard_is_a_valid_dashboard_of_prometheus_panels() -> None:
    dashboard = _dashboard()
    assert dashboard["title"]
    assert dashboard["uid"]
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    source = {"type": "prometheus", "uid": "${datasource}"}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["title"]
        assert panel["type"] == "timeseries"
        assert panel["datasource"] == source
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24  # Grafana's grid width
        assert panel["targets"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            assert target["datasource"] == source
            assert target["expr"]


def _unknown(query: str, exported: dict[str, set[str]]) -> list[str]:
    """What a query names that the scrape does not have: metrics, then labels."""
    selectors, groupings = _selectors_and_groupings(query)
    if not selectors:
        return ["no metric at all"]
    problems = [f"metric {s.name}" for s in selectors if s.name not in exported]
    if problems:
        return problems
    for selector in selectors:
        known = exported[selector.name] | TARGET_LABELS
        problems += [
            f"label {m.name} of {selector.name}"
            for m in selector.matchers.matchers
            if m.name not in known
        ]
    every_label = set().union(*(exported[s.name] for s in selectors)) | TARGET_LABELS
    problems += [f"grouping by {labels}" for labels in groupings if not set(labels) <= every_label]
    return problems


@pytest.mark.parametrize("query", _queries())
def test_every_query_names_only_exported_metrics_and_their_labels(
    exported: dict[str, set[str]], query: str
) -> None:
    assert _unknown(query, exported) == []


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("sum(rate(rlhf_update_request_total[5m]))", "metric rlhf_update_request_total"),
        ("rlhf_update_duration_seconds_bucket", None),
        ("sum(rlhf_update_queued{status='200'})", "label status of rlhf_update_queued"),
        ("sum by (stage) (rlhf_update_duration_seconds_count)", "grouping by ['stage']"),
    ],
)
def test_a_name_the_service_does_not_export_is_caught(
    exported: dict[str, set[str]], query: str, problem: str | None
) -> None:
    assert _unknown(query, exported) == ([problem] if problem else [])


def test_the_dashboard_shows_what_it_is_for(exported: dict[str, set[str]]) -> None:
    named = {s.name for query in _queries() for s in _selectors_and_groupings(query)[0]}
    missing = {name: why for name, why in REQUIRED.items() if name not in named}
    assert not missing
    assert REQUIRED.keys() <= exported.keys()
