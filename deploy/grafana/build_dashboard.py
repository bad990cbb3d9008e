# ruff: noqa: E501  (panel definitions read best one per line)
"""Writes deploy/grafana/see-sidecar.json, the Grafana dashboard of the sidecar's Prometheus metrics.

The dashboard is generated (run `python deploy/grafana/build_dashboard.py`) so its panels stay short and
uniform; tests check that every metric an expression names is one the server exports.
"""

from __future__ import annotations

import json
from pathlib import Path

SEL = 'model_name=~"$model_name"'
RATE = "5m"


def panel(title: str, exprs: list[tuple[str, str]], x: int, y: int, w: int = 12, h: int = 8, unit: str = "short",
          kind: str = "timeseries", description: str = "") -> dict:  # fmt: skip
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "expr": expr,
                "legendFormat": legend,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
            }
            for i, (expr, legend) in enumerate(exprs)
        ],  # fmt: skip
    }


def row(title: str, y: int) -> dict:
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
        "panels": [],
    }


def quantile(q: float, metric: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{SEL}}}[{RATE}])))"


def dashboard() -> dict:
    panels = [
        row("Self-evaluation scores", 0),
        panel("Median expected score per attribute (0-9)", [(quantile(0.5, "see_expected_score", "attribute"), "{{attribute}}")], 0, 1),
        panel("Score distribution per attribute (share of answers per score bucket)",
              [(f"sum by (le) (rate(see_expected_score_bucket{{{SEL}, attribute=~\"$attribute\"}}[{RATE}]))", "{{le}}")],
              12, 1, kind="heatmap"),
        panel("Median entropy per attribute (nats; ln 10 = uniform)", [(quantile(0.5, "see_score_entropy_nats", "attribute"), "{{attribute}}")], 0, 9),
        panel("Median label mass per attribute", [(quantile(0.5, "see_score_label_mass", "attribute"), "{{attribute}}")], 12, 9, unit="percentunit"),
        row("Decisions and readouts", 17),
        panel("Decisions per second", [(f"sum by (action) (rate(see_decisions_total{{{SEL}}}[{RATE}]))", "{{action}}")], 0, 18, unit="reqps"),
        panel("Readout source per second", [(f"sum by (source) (rate(see_readouts_total{{{SEL}}}[{RATE}]))", "{{source}}")], 12, 18, unit="reqps",
              description="generated: the model wrote its block; forced: teacher-forced readout; unavailable: none"),
        row("Latency and load", 26),
        panel("Request latency p50 / p95 by route", [
            (f"histogram_quantile(0.5, sum by (le, route) (rate(see_http_request_duration_seconds_bucket[{RATE}])))", "p50 {{route}}"),
            (f"histogram_quantile(0.95, sum by (le, route) (rate(see_http_request_duration_seconds_bucket[{RATE}])))", "p95 {{route}}"),
        ], 0, 27, unit="s"),
        panel("Time to first token p50 / p95 (streaming)", [
            (quantile(0.5, "see_time_to_first_token_seconds", "model_name"), "p50"),
            (quantile(0.95, "see_time_to_first_token_seconds", "model_name"), "p95"),
        ], 12, 27, unit="s"),
        panel("Queue depth and running requests", [
            (f"sum(see_engine_requests{{{SEL}, state=\"waiting\"}})", "waiting (queue depth)"),
            (f"sum(see_engine_requests{{{SEL}, state=\"running\"}})", "running"),
            (f"sum(see_requests_in_flight{{{SEL}}})", "in flight (HTTP)"),
        ], 0, 35),
        panel("KV cache usage", [(f"max by (pod) (see_engine_kv_cache_usage_ratio{{{SEL}}})", "{{pod}}")], 12, 35, unit="percentunit"),
        panel("Errors (4xx, 5xx) per second", [
            (f"sum by (status_code) (rate(see_http_requests_total{{status_code=~\"4..|5..\"}}[{RATE}]))", "{{status_code}}"),
        ], 0, 43),
        panel("Tokens per second", [
            (f"sum(rate(see_completion_tokens_total{{{SEL}}}[{RATE}]))", "completion"),
            (f"sum(rate(see_prompt_tokens_total{{{SEL}}}[{RATE}]))", "prompt"),
        ], 12, 43),
        row("Calibration against judge feedback", 51),
        panel("Calibration drift (1 = alarm)", [(f"max(see_calibration_drift{{{SEL}}})", "drift")], 0, 52, w=6, kind="stat"),
        panel("Drift: recent minus reference MAE", [(f"max(see_calibration_drift_delta{{{SEL}}})", "delta")], 6, 52, w=6, kind="stat"),
        panel("Rolling MAE per attribute (recent window)", [(f"max by (attribute) (see_calibration_rolling_mae{{{SEL}}})", "{{attribute}}")], 12, 52),
        panel("Rolling top-label ECE per attribute", [(f"max by (attribute) (see_calibration_rolling_ece{{{SEL}}})", "{{attribute}}")], 0, 60),
        panel("Absolute error p50 / p90 per attribute (new verdicts)", [
            (quantile(0.5, "see_calibration_absolute_error", "attribute"), "p50 {{attribute}}"),
            (quantile(0.9, "see_calibration_absolute_error", "attribute"), "p90 {{attribute}}"),
        ], 12, 60),
        panel("Feedback per second by source and status", [
            (f"sum by (source, status) (rate(see_feedback_total{{{SEL}}}[{RATE}]))", "{{source}} {{status}}"),
        ], 0, 68, unit="reqps"),
        panel("Shadow judge outcomes and queue", [
            (f"sum by (outcome) (rate(see_shadow_judge_requests_total{{{SEL}}}[{RATE}]))", "{{outcome}}"),
            (f"sum(see_shadow_judge_queue_depth{{{SEL}}})", "queue depth"),
        ], 12, 68),
        panel("Ledger writes by outcome", [
            (f"sum by (kind, outcome) (rate(see_ledger_writes_total{{{SEL}}}[{RATE}]))", "{{kind}} {{outcome}}"),
        ], 0, 76, unit="reqps"),
        panel("Forced readout cost: context tokens per readout (computed, from the prefix cache)", [
            (f"sum by (kind) (rate(see_readout_context_tokens_total{{{SEL}}}[{RATE}])) / ignoring(kind) group_left "
             f"sum(rate(see_readout_duration_seconds_count{{{SEL}}}[{RATE}]))", "{{kind}}"),
            (quantile(0.5, "see_readout_duration_seconds", "model_name"), "p50 readout seconds"),
        ], 12, 76,
              description="Each forced readout is five engine steps; each recomputes its context past the last full KV "
                          "block (SEE_KV_BLOCK_SIZE). The floor is the ~45 block tokens after the answer."),
        panel("Certified policy: realised P(bad | accept) vs its promise", [
            (f"max(see_certified_accept_risk{{{SEL}}})", "realised"),
            (f"max(see_certified_accept_risk_bound{{{SEL},bound=\"lower\"}})", "95% lower"),
            (f"max(see_certified_accept_risk_bound{{{SEL},bound=\"upper\"}})", "95% upper"),
            (f"max(see_certified_accept_risk_target{{{SEL}}})", "promised"),
        ], 0, 84, unit="percentunit",
              description="Judged answers the certified rule accepts (newest monitor window) that the judge found bad. "
                          "Above the promise beyond the interval = the traffic no longer looks like the calibration set: refit."),
        panel("Certified policy alarm (1 = promise broken) and accepted verdicts", [
            (f"max(see_certified_accept_risk_alarm{{{SEL}}})", "alarm"),
            (f"sum(see_certified_accepted_verdicts{{{SEL}}})", "accepted verdicts in window"),
        ], 12, 84, kind="stat"),
    ]  # fmt: skip
    for index, item in enumerate(panels, start=1):
        item["id"] = index
    variable = {"type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"}, "refresh": 2,
                "includeAll": True, "multi": True, "current": {"text": "All", "value": "$__all"}}  # fmt: skip
    return {
        "title": "SEE Sidecar",
        "uid": "see-sidecar",
        "tags": ["see-sidecar", "llm"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"type": "datasource", "name": "datasource", "label": "Prometheus", "query": "prometheus"},
                {
                    **variable,
                    "name": "model_name",
                    "label": "model",
                    "definition": "label_values(see_readouts_total, model_name)",
                    "query": {"query": "label_values(see_readouts_total, model_name)", "refId": "model"},
                },
                {
                    **variable,
                    "name": "attribute",
                    "label": "attribute (heatmap)",
                    "definition": "label_values(see_expected_score_bucket, attribute)",
                    "query": {"query": "label_values(see_expected_score_bucket, attribute)", "refId": "attribute"},
                },
            ]
        },  # fmt: skip
        "panels": panels,
    }


if __name__ == "__main__":
    out = Path(__file__).with_name("see-sidecar.json")
    out.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(out)
