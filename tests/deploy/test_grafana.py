"""deploy/grafana/samsvar-broker.json: a well-formed dashboard that asks only for metrics
and labels the broker exposes.

The names are read from a live :class:`broker.metrics.BrokerMetrics` exposition (what
``GET /metrics`` serves), not from a list kept here, so a renamed metric fails this test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from broker.config import BrokerConfig
from broker.metrics import BrokerMetrics
from broker.service import QueryService
from tests.broker.ports import unstarted_ports
from tests.conftest import MqttServer
from tests.deploy.conftest import DEPLOY
from tests.e2e.conftest import ProducerSpec, build_federation

DASHBOARD = DEPLOY / "grafana" / "samsvar-broker.json"
PROMETHEUS_LABELS = {"instance", "job"}  # added by the scrape, not by the broker
_NAME = re.compile(r"\bsamsvar_[a-z0-9_]+")
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}


def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return board


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries(board: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]
            exprs.append(q["query"] if isinstance(q, dict) else q)
    return exprs


def exposition(tmp_path: Path) -> tuple[set[str], set[str]]:
    """Sample names and label names of a fresh broker's /metrics."""
    fed = build_federation(tmp_path, MqttServer("mosquitto", 1883, None, None), "t/samsvar/v1",
                           [ProducerSpec("P1")])
    config = BrokerConfig(registry_path=tmp_path / "registry.toml",
                          key_path=tmp_path / "broker.jwk")
    service = QueryService(config=config, registry=fed.registry, key=fed.keys["broker"],
                           **unstarted_ports(config, fed.keys["broker"]))
    metrics = BrokerMetrics(CollectorRegistry(), service)
    service.observers.add(metrics)
    metrics.query_answered(0.1)
    metrics.query_rejected(status=403, reason="no-care-relation")
    metrics.source_finished("P1", "ok", 0.05)
    metrics.access_log_committed(0.002)
    body, _ = metrics.exposition()
    names: set[str] = set()
    labels: set[str] = set()
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            names.add(sample.name)
            labels.update(sample.labels)
    return names, labels


def test_dashboard_shape() -> None:
    board = dashboard()
    assert board["uid"] == "samsvar-broker" and board["title"]
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_only_metrics_and_labels_the_broker_exposes(tmp_path: Path) -> None:
    names, labels = exposition(tmp_path)
    assert names, "the broker exposes no samsvar_ metrics"
    board = dashboard()
    used_names = {n for q in queries(board) for n in _NAME.findall(q)}
    assert used_names, "the dashboard asks for no samsvar_ metric"
    assert used_names <= names, f"not exposed by broker/metrics.py: {sorted(used_names - names)}"

    used_labels: set[str] = set()
    for q in queries(board):
        for grouping in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", q):
            used_labels.update(x.strip() for x in grouping.split(",") if x.strip())
        for selector in re.findall(r"\{([^}]*)\}", q):
            used_labels.update(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)",
                                          selector))
        used_labels.update(re.findall(r"label_values\([^,]+,\s*([a-zA-Z_]+)\)", q))
    used_labels -= _PROMQL_WORDS
    unknown = used_labels - labels - PROMETHEUS_LABELS
    assert not unknown, f"labels the broker's metrics do not have: {sorted(unknown)}"
