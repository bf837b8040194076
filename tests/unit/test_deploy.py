"""deploy/'s monitoring against the code: the alert rules, the dashboard and
docs/operations.md's tables mention only metrics the daemon exports (with
their labels and the label values it sets), every alert has a promtool test
that sees it fire, and the tables say truly which alert and panel use what.
The workloads (Kubernetes, compose, systemd, the image) are checked in
test_deploy_workloads.py.

The real tools (promtool, a Prometheus server) check the same files in
tests/integration/test_ops.py; these checks need nothing installed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from calstream.daemon.operations.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OPERATIONS = ROOT / "docs" / "operations.md"
# Labels Prometheus adds to every series it scrapes, and the one relabelled in.
TARGET_LABELS = {"job", "instance", "role"}


# -- what the daemon exports ------------------------------------------------------

def catalog() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every family of daemon/operations/metrics.py: name -> (type, label names)."""
    out = {}
    for metric in vars(Metrics()).values():
        if not hasattr(metric, "_labelnames"):
            continue  # the registry itself
        (family,) = metric.describe()
        out[family.name] = (family.type, tuple(metric._labelnames))
    return out


def series_names() -> dict[str, tuple[str, ...]]:
    """Every sample name a scrape can contain -> its labels (le for buckets)."""
    out = {}
    for name, (kind, labels) in catalog().items():
        if kind == "counter":
            out[f"{name}_total"] = labels
            out[f"{name}_created"] = labels
        elif kind == "histogram":
            out[f"{name}_bucket"] = (*labels, "le")
            for suffix in ("_count", "_sum", "_created"):
                out[f"{name}{suffix}"] = labels
        else:
            out[name] = labels
    return out


METRIC = re.compile(r"\bcalstream_[a-z0-9_]+[a-z0-9]\b")
SELECTOR = re.compile(r"\b(calstream_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def text_files() -> list[Path]:
    return [p for p in DEPLOY.rglob("*") if p.is_file()]


def promql_expressions() -> list[str]:
    exprs = []
    for group in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]:
        exprs += [r["expr"] for r in group["rules"]]
    dash = json.loads((DEPLOY / "grafana" / "calstream.json").read_text())
    exprs += [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert exprs
    return exprs


def test_the_metric_names_follow_prometheus_conventions():
    for name, (kind, labels) in catalog().items():
        assert name.startswith("calstream_"), name
        assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name
        if kind == "histogram":
            assert name.endswith("_seconds"), f"{name}: a histogram of durations, in seconds"
        if "timestamp" in name or name.endswith(("_age", "_duration", "_latency")):
            assert name.endswith("_seconds"), f"{name}: base unit seconds"
        if "rss" in name or "memory" in name:
            assert name.endswith("_bytes"), f"{name}: base unit bytes"
        assert not name.endswith("_total"), f"{name}: prometheus_client adds _total"
        assert not set(labels) & TARGET_LABELS, f"{name}: {labels} clash with target labels"


def test_deploy_mentions_only_metrics_the_daemon_exports():
    known = series_names()
    for path in text_files():
        for name in METRIC.findall(path.read_text()):
            assert name in known or name in catalog(), f"{path.relative_to(ROOT)}: {name}"


def test_promql_uses_only_labels_the_metrics_have():
    known = series_names()
    every_label = {label for labels in known.values() for label in labels} | TARGET_LABELS
    for expr in promql_expressions():
        for name, matchers in SELECTOR.findall(expr):
            for label in MATCHER.findall(matchers):
                assert label in set(known[name]) | TARGET_LABELS, f"{name} has no {label}: {expr}"
        for labels in GROUPING.findall(expr):
            for label in filter(None, (x.strip() for x in labels.split(","))):
                assert label in every_label, f"no metric has a label {label!r}: {expr}"


def test_every_alert_says_what_and_how_bad():
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"][0]
    for rule in rules["rules"]:
        assert rule["alert"].startswith("Calstream")
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_the_operations_table_documents_every_metric_and_only_those():
    text = OPERATIONS.read_text()
    table = [line for line in text.splitlines() if line.startswith("| `calstream_")]
    documented = {re.match(r"\| `([a-z0-9_]+)`", line).group(1): line for line in table}
    exported = {name + ("_total" if kind == "counter" else ""): (kind, labels)
                for name, (kind, labels) in catalog().items()}
    assert set(documented) == set(exported), (set(documented) ^ set(exported))
    for name, (kind, labels) in exported.items():
        row = [c.strip() for c in documented[name].strip("|").split("|")]
        assert row[1] == kind, f"{name}: documented as {row[1]}, is a {kind}"
        shown = set(re.findall(r"`([a-z_]+)`", row[2]))
        assert shown == set(labels), f"{name}: labels {labels}, documented {shown}"


def test_the_dashboard_is_grafana_json_with_a_prometheus_datasource():
    dash = json.loads((DEPLOY / "grafana" / "calstream.json").read_text())
    assert dash["uid"] == "calstream" and dash["panels"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"


def test_the_alerts_table_lists_every_alert_rule():
    """docs/operations.md, "Alerts": the on-call reads the table; an alert in
    alerts.yml that the table leaves out (CalstreamExposuresMissing,
    CalstreamPlannerLeaders were) pages someone with nothing to look up."""
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"][0]
    text = OPERATIONS.read_text().split("## Alerts", 1)[1].split("\n## ", 1)[0]
    table = {m.group(1): m.group(2) for m in re.finditer(
        r"^\| `(Calstream[A-Za-z]+)` \|.*\| (\S+) \| (?:warning|critical) \|$", text, re.M)}
    for rule in rules["rules"]:
        assert rule["alert"] in table, f"{rule['alert']} is not in the alerts table"
        assert table[rule["alert"]] == rule.get("for", "—"), rule["alert"]
    assert set(table) == {r["alert"] for r in rules["rules"]}


def test_every_alert_has_a_promtool_test_that_sees_it_fire():
    """A rule whose expression breaks (a renamed metric, a label dropped)
    stays quiet for ever; only a test that expects it to fire notices.
    CalstreamBrokerLost had none."""
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"][0]
    tests = yaml.safe_load((DEPLOY / "prometheus" / "alerts_test.yml").read_text())["tests"]
    fired = {case["alertname"] for t in tests for case in t.get("alert_rule_test", [])
             if case.get("exp_alerts")}
    for rule in rules["rules"]:
        assert rule["alert"] in fired, f"{rule['alert']}: no test expects it to fire"


def test_the_metrics_table_says_truly_which_alert_and_panel_use_each_metric():
    """docs/operations.md's "used by" column sends the on-call to a panel or
    an alert. Eighteen metrics it said were on the dashboard (the planner's
    lease, missing exposures, the broker's records lost, the event loop's
    heartbeat...) had no panel, and the stall alert it named for
    calstream_last_progress_timestamp_seconds no longer reads it."""
    panels = " ".join(promql_expressions()[len(alert_rules()):])
    alerts = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    rows = [line for line in OPERATIONS.read_text().splitlines()
            if line.startswith("| `calstream_")]
    assert rows
    for row in rows:
        name = re.match(r"\| `([a-z0-9_]+)`", row).group(1)
        used_by = row.rstrip().rstrip("|").rsplit("|", 1)[1]
        named = re.compile(rf"\b{name}(?:_bucket|_count|_sum)?\b")
        if "dashboard" in used_by:
            assert named.search(panels), f"{name}: documented on the dashboard, has no panel"
        said = set(re.findall(r"\bCalstream[A-Za-z]+", used_by))
        assert said <= set(alerts), f"{name}: no alert {said - set(alerts)}"
        for alert, expr in alerts.items():
            assert (alert in said) == bool(named.search(expr)), \
                f"{name}: the table {'names' if alert in said else 'omits'} {alert}"


def alert_rules() -> list[dict]:
    return yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]


def test_the_label_values_the_rules_match_are_ones_the_code_sets():
    """A matcher on a value the daemon never sets (a cause renamed) leaves
    its rule quiet for ever, and promtool's own tests, fed the old value,
    still pass. Each value a rule or panel selects is one the code writes."""
    source = "\n".join(p.read_text() for room in ("daemon", "steps")
                       for p in (ROOT / room).rglob("*.py"))
    matcher = re.compile(r'\b(calstream_[a-z0-9_]+)\{[^}]*?\b([a-z_]+)\s*=~?\s*"([^"$]*)"')
    checked = 0
    for expr in promql_expressions():
        for name, label, values in matcher.findall(expr):
            for value in values.split("|"):
                assert f'"{value}"' in source, f"{name}{{{label}}}: nothing sets {value!r}"
                checked += 1
    assert checked
