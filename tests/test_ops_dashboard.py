"""examples/grafana_dashboard.json: every metric and label it queries exists in the registry."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from redis_checkpoint.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parent.parent / "examples" / "grafana_dashboard.json"

# PromQL words that look like names but are not metrics.
PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "rate", "increase", "delta", "deriv", "irate",
    "histogram_quantile", "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "label_values",
}  # fmt: skip
SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum")}


def exposed_series() -> dict[str, set[str]]:
    """Every series name the package can expose, with its label names (``le`` on buckets)."""
    metrics = Metrics(CollectorRegistry())
    collectors = vars(metrics._collectors).values()
    series: dict[str, set[str]] = {}
    for collector in collectors:
        describe = getattr(collector, "describe", None)
        if describe is None or collector is metrics.registry:
            continue
        labels = set(getattr(collector, "_labelnames", ()))
        for family in describe():
            if family.name == metrics.name("cache_hit_ratio"):
                labels = {"cache_type", "operation"}
            for suffix in SUFFIXES[family.type]:
                extra = {"le"} if suffix == "_bucket" else set()
                series[family.name + suffix] = labels | extra
    return series


def queries(dashboard: dict[str, Any]) -> list[str]:
    found = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    found += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return found


def used_names(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names it is filtered or grouped by) for each metric in a PromQL query."""
    text = re.sub(r'"[^"]*"', '""', expr)
    # Grafana's label_values(metric, label) asks for a label of a metric.
    text = re.sub(r"label_values\(\s*(\w+)\s*,\s*(\w+)\s*\)", r'\1{\2=""}', text)
    grouped: set[str] = set()

    def take_group(match: re.Match[str]) -> str:
        grouped.update(label.strip() for label in match.group(1).split(",") if label.strip())
        return " "

    text = re.sub(r"\b(?:by|without)\s*\(([^)]*)\)", take_group, text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    used: list[tuple[str, set[str]]] = []
    for match in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?(\s*\()?", text):
        name, matchers, call = match.groups()
        if call or name in PROMQL_WORDS:
            continue
        labels = set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers or ""))
        used.append((name, labels))
    return [(name, labels | grouped) for name, labels in used]


def test_every_metric_the_dashboard_uses_is_in_the_registry() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    series = exposed_series()
    checked = set()
    for expr in queries(dashboard):
        for name, labels in used_names(expr):
            assert name in series, f"{name!r} (in {expr!r}) is not a metric of the package"
            unknown = labels - series[name]
            assert not unknown, f"{name} has no label(s) {sorted(unknown)} (in {expr!r})"
            checked.add(name)
    # The families are all on the dashboard.
    for name in (
        "cache_hits_total",
        "cache_misses_total",
        "cache_hit_ratio",
        "cache_operation_duration_seconds_bucket",
        "cache_memory_usage_bytes",
        "cache_errors_total",
        "cache_fallback_operations_total",
        "cache_singleflight_waits_total",
        "redis_circuit_state",
        "redis_circuit_transitions_total",
        "checkpoint_operations_total",
        "redis_used_memory_bytes",
        "redis_evicted_keys",
        "redis_maxmemory_policy",
    ):
        assert name in checked, f"the dashboard does not show {name}"


def test_the_checker_catches_a_wrong_name_or_label() -> None:
    series = exposed_series()
    [(name, labels)] = used_names('sum by (cache) (rate(cache_hit_total{cache_type="x"}[5m]))')
    assert name == "cache_hit_total" and name not in series
    assert labels == {"cache", "cache_type"}
    [(name, labels)] = used_names("sum by (le) (rate(cache_operation_duration_seconds_bucket[5m]))")
    assert labels <= series[name]
