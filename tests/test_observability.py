"""The Grafana dashboards and the Prometheus alert rules in the chart.

Every metric a dashboard query or an alert expression names is one that Parley's code registers
(the runtime's, the TTS server's and the operator's prometheus_client registries, collected
here) or one of the pinned external metrics (`charts/parley/dashboards/external-metrics.txt`:
vLLM, kube-state-metrics, DCGM exporter). Every query parses as PromQL (real promtool); the
alert rules pass `promtool check rules` and their unit tests (`tests/alerts/`), with a firing
and a quiet case for every alert; every runbook_url names a section of docs/runbook.md. The
dashboards have a fixed uid, a datasource variable that every query uses, no `${DS_...}` inputs
(the Grafana sidecar cannot resolve them), and stay well under the 256 KiB a ConfigMap may
carry through `kubectl apply`.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY, CollectorRegistry

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "parley"
DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
EXTERNAL = CHART / "dashboards" / "external-metrics.txt"
ALERTS = CHART / "files" / "alerts.yaml"
ALERT_TESTS = sorted((REPO / "tests" / "alerts").glob("*.yaml"))
RUNBOOK = REPO / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/parley-voice/parley/blob/main/docs/runbook.md#"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
MAX_DASHBOARD_BYTES = 256 * 1024
#: The alerts issue 11 asks for.
REQUIRED_ALERTS = {
    "ParleyTTFAOverSLO",
    "ParleyBargeInOverSLO",
    "ParleyBackpressureAdmissionLimited",
    "ParleyContainerRestarting",
    "ParleyVRAMNearCap",
    "ParleySoakFailed",
    "ParleyOperatorReconcileErrors",
    "ParleySCOSScrapesFailing",
}
#: Grafana's variables, as promtool may read them.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$namespace": ".*",
    "$voicedeployment": ".*",
}
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and"}
PROMQL_WORDS |= {"or", "unless", "offset", "inf", "nan"}


# -- what the code exports -------------------------------------------------------------------


def series_names(name: str, kind: str) -> set[str]:
    """The series a metric family `name` of type `kind` appears as on /metrics."""
    if kind == "counter" and name.endswith("_total"):
        name = name.removesuffix("_total")
    return {name + suffix for suffix in SERIES_SUFFIXES[kind]}


def registered(registry: CollectorRegistry) -> set[str]:
    return {s for family in registry.collect() for s in series_names(family.name, family.type)}


def runtime_series() -> set[str]:
    from parley_runtime.signals.metrics import RuntimeMetrics

    registry = CollectorRegistry()
    RuntimeMetrics(registry)
    return registered(registry)


def tts_series() -> set[str]:
    from parley_tts.manager import ModelManager
    from parley_tts.metrics import TTSMetrics

    async def load(name: str) -> None:
        return None

    registry = CollectorRegistry()
    # Its model counts are collected from a manager at scrape time, as the server does.
    TTSMetrics(registry).observe_state(ModelManager(["piper"], load), 0, 0)
    return registered(registry)


def operator_series() -> set[str]:
    import parley_operator.metrics  # noqa: F401 (registers the operator's metrics)

    return registered(REGISTRY)  # the operator serves the default registry


def external_series() -> set[str]:
    names = set()
    for line in EXTERNAL.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, kind, _source = line.split()
            names |= series_names(name, kind)
    return names


@pytest.fixture(scope="module")
def known_series() -> set[str]:
    return runtime_series() | tts_series() | operator_series() | external_series()


# -- PromQL, dashboards, rules ---------------------------------------------------------------


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: its identifiers that are not functions,
    aggregations, keywords, label names (in matchers and grouping lists) or inside strings."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', " ", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    grouping = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
    text = re.sub(grouping, " ", text, flags=re.IGNORECASE)
    names = set()
    for match in re.finditer(r"(?<![\w.:$])[A-Za-z_:][\w:]*", text):
        called = text[match.end() :].lstrip().startswith("(")
        if not called and match.group().lower() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def load_dashboard(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable's metric."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"{dashboard['uid']} panel {panel['title']!r}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"]["query"])
            assert found, f"{dashboard['uid']} ${variable['name']}: not label_values(metric, label)"
            yield f"{dashboard['uid']} variable ${variable['name']}", found.group(1)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def all_queries() -> list[tuple[str, str]]:
    queries = [q for path in DASHBOARDS for q in dashboard_queries(load_dashboard(path))]
    return queries + [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file (code blocks left out)."""
    anchors: set[str] = set()
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6}\s+(.+?)\s*#*$", line)):
            base = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
            anchor, n = base, 0
            while anchor in anchors:
                n += 1
                anchor = f"{base}-{n}"
            anchors.add(anchor)
    return anchors


@pytest.fixture(scope="module")
def promtool() -> str:
    """Debian's promtool, fetched once into ~/.cache/parley/promtool (tests/k8s/promtool.sh)."""
    script = REPO / "tests" / "k8s" / "promtool.sh"
    found = subprocess.run([str(script)], capture_output=True, text=True)
    assert found.returncode == 0, f"tests/k8s/promtool.sh failed:\n{found.stderr}"
    return found.stdout.strip()


def run(*command: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd)


# -- tests -----------------------------------------------------------------------------------


def test_the_extractor_finds_metrics_and_nothing_else() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (namespace, le) (rate(parley_ttfa_seconds_bucket"
        '{pod=~"a.+", le!="1e3"}[$__rate_interval]))) > 0.25 and on (pod)'
        " vllm:num_requests_waiting offset 5m / ignoring(le) group_left DCGM_FI_DEV_FB_USED"
        ' * 1e3 or label_replace(up, "x", "$1", "y", "(.+)") unless sum(foo_total) without (bar)'
        " > bool inf"
    )
    assert metric_names(expr) == {
        "parley_ttfa_seconds_bucket",
        "vllm:num_requests_waiting",
        "DCGM_FI_DEV_FB_USED",
        "up",
        "foo_total",
    }


def test_the_registries_are_collected() -> None:
    """The names come from the code, in their exposition form."""
    assert {"parley_ttfa_seconds_bucket", "parley_turns_total"} <= runtime_series()
    assert {"parley_tts_model_loads_total", "parley_tts_ttfb_seconds_count"} <= tts_series()
    assert "parley_operator_reconcile_errors_total" in operator_series()
    assert "parley_ttfa_seconds" not in runtime_series()  # a histogram is not a series


def test_every_metric_named_in_a_dashboard_or_alert_is_exported(known_series: set[str]) -> None:
    unknown = {
        f"{where}: {name}"
        for where, expr in all_queries()
        for name in metric_names(expr)
        if name not in known_series
    }
    assert not unknown, "metrics nobody exports:\n" + "\n".join(sorted(unknown))


def test_every_dashboard_query_is_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses each query, as a recording rule, once Grafana's variables are set."""
    rules = []
    for n, (where, expr) in enumerate(all_queries()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr.replace("$1", ""), f"{where}: an unknown variable in {expr}"
        rules.append({"record": f"parley_query_{n}", "expr": expr})
    checked = tmp_path / "queries.yaml"
    checked.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    result = run(promtool, "check", "rules", str(checked))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_a_dashboard_is_sidecar_ready(path: Path) -> None:
    text = path.read_text()
    assert len(text.encode()) < MAX_DASHBOARD_BYTES
    assert "${DS_" not in text and "__inputs" not in text
    dashboard = load_dashboard(path)
    assert re.fullmatch(r"parley-[a-z0-9-]+", dashboard["uid"]) and len(dashboard["uid"]) <= 40
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    queried = [p for p in panels(dashboard) if p["type"] != "row"]
    assert queried
    for panel in queried:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_dashboards_have_distinct_uids_and_titles() -> None:
    loaded = [load_dashboard(path) for path in DASHBOARDS]
    assert {p.name for p in DASHBOARDS} == {"voice-slos.json", "models.json", "operator.json"}
    assert len({d["uid"] for d in loaded}) == len({d["title"] for d in loaded}) == len(loaded)


def test_the_alert_rules_pass_promtool_check(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_the_alert_unit_tests_pass(promtool: str) -> None:
    tests = [str(path.relative_to(REPO / "tests" / "alerts")) for path in ALERT_TESTS]
    result = run(promtool, "test", "rules", *tests, cwd=REPO / "tests" / "alerts")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(tests)


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in ALERT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= REQUIRED_ALERTS
    assert names - firing == set(), "alerts no test sees firing"
    assert names - quiet == set(), "alerts no test sees quiet"


def test_every_alert_says_how_bad_what_and_where_to_look() -> None:
    anchors = github_anchors(RUNBOOK.read_text())
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        url = annotations["runbook_url"]
        assert url.startswith(RUNBOOK_URL), rule["alert"]
        assert url.removeprefix(RUNBOOK_URL) in anchors, f"{rule['alert']}: no section {url}"


def test_github_anchors_follow_githubs_rules() -> None:
    markdown = "# Install\n## Safe restart: drain, then delete\n```\n# a comment\n```\n# Install"
    assert github_anchors(markdown) == {"install", "safe-restart-drain-then-delete", "install-1"}
