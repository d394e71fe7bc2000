"""deploy/prometheus and deploy/grafana: the rules and the config pass promtool, the rules' unit
tests (alerts.test.yml) pass, every runbook link lands on a section of docs/operations.md, and every
metric an alert or a dashboard panel asks for is one the processes export."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import chat.infra.metrics  # noqa: F401  (every metric of every process, in REGISTRY)

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "headless-chat.json"
OPERATIONS = ROOT / "docs" / "operations.md"
# Series Prometheus makes itself for every target, not any process.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
}


def promtool() -> str:
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (apt-get install prometheus); CI runs these")
    return found


def run_promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *map(str, args)], capture_output=True, text=True, timeout=60)


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def exported_names() -> set[str]:
    """Every series name chat/infra/metrics.py's metrics can produce, suffixes included."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (not its functions, labels or keywords)."""
    text = expr.replace("$__rate_interval", "1m")
    text = re.sub(r'"(?:\\.|[^"\\])*"|`[^`]*`', "", text)  # strings
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)  # label matchers, ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    found = re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", text)
    return {m[1] for m in found if m[2] is None and m[1] not in _KEYWORDS}


def slugs(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", markdown, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_the_rules_and_the_config_pass_promtool() -> None:
    checked = run_promtool("check", "rules", PROMETHEUS / "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = run_promtool("check", "config", PROMETHEUS / "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_the_rules_unit_tests_pass() -> None:
    tested = run_promtool("test", "rules", PROMETHEUS / "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_is_unit_tested() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == {rule["alert"] for rule in rules()}


def test_every_alert_can_be_acted_on() -> None:
    anchors = slugs(OPERATIONS.read_text())
    for rule in rules():
        notes = rule["annotations"]
        assert len(notes["summary"]) > 20 and len(notes["description"]) > 60, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        page, _, anchor = notes["runbook_url"].partition("#")
        assert page == "docs/operations.md" and anchor in anchors, notes["runbook_url"]


def test_alerts_and_panels_ask_only_for_exported_metrics() -> None:
    known = exported_names() | PROMETHEUS_OWN
    exprs = [rule["expr"] for rule in rules()] + dashboard_exprs()
    used = {name for expr in exprs for name in metric_names(expr)}
    assert used, exprs
    assert sorted(used - known) == []


def test_metric_names_are_read_out_of_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="b_c"}[$__rate_interval]))) or absent(b) > 0'
    )
    assert metric_names(expr) == {"a_bucket", "b"}
    assert metric_names("max by (queue) (q - min_over_time(q[10m])) > 0") == {"q"}


def test_the_dashboard_is_a_grafana_dashboard(tmp_path: Path) -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36 and board["uid"] and board["title"]
    [variable] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${" + variable["name"] + "}", panel["title"]
        assert panel["targets"] and {"x", "y", "w", "h"} <= panel["gridPos"].keys(), panel["title"]
    titles = " ".join(panel["title"].lower() for panel in board["panels"])
    for wanted in (
        "throughput",
        "delivery",
        "queue depth",
        "queue age",
        "workers",
        "sockets",
        "dead letters",
    ):
        assert wanted in titles
    # Each panel's PromQL parses: promtool checks it as a recording rule.
    recorded = [
        {"record": f"dashboard:expr{n}", "expr": expr.replace("$__rate_interval", "1m")}
        for n, expr in enumerate(dashboard_exprs())
    ]
    rules_file = tmp_path / "dashboard.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    checked = run_promtool("check", "rules", rules_file)
    assert checked.returncode == 0, checked.stdout + checked.stderr
