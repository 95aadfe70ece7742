#!/usr/bin/env python3
"""Writes the Grafana dashboards in dashboards/grafana/ (run it after editing this file).

Panels are listed here once, as (title, type, unit, queries); the JSON Grafana wants is derived.
CPU and memory panels use cAdvisor's container_* series on Kubernetes and fall back to the
process collector's series (`or`) everywhere else.
"""
import json
import pathlib

HERE = pathlib.Path(__file__).parent
DS = {"type": "prometheus", "uid": "${datasource}"}
EXEC = 'component="executor", executor_id=~"$executor_id"'


def target(ref, expr, legend):
    return {"refId": ref, "datasource": DS, "expr": expr, "legendFormat": legend}


def panel(pid, title, kind, unit, queries, x, y, w=12, h=8, description=""):
    p = {
        "id": pid,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "right", "showLegend": True}},
        "targets": [target(chr(ord("A") + i), e, l) for i, (e, l) in enumerate(queries)],
    }
    if kind == "barchart":
        p["options"] = {"xField": "executors", "orientation": "auto", "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
        for t in p["targets"]:
            t["format"] = "table"
            t["instant"] = True
        p["transformations"] = [{"id": "labelsToFields", "options": {}}]
    return p


def layout(specs):
    """Two panels per row, in order."""
    return [panel(i + 1, *spec, x=(i % 2) * 12, y=(i // 2) * 8) for i, spec in enumerate(specs)]


def dashboard(uid, title, description, panels, variables):
    datasource = {
        "name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
        "hide": 0, "refresh": 1, "options": [], "regex": "", "skipUrlSync": False,
    }
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["canopy"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "5s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [datasource] + variables},
        "panels": panels,
    }


EXECUTOR_VAR = {
    "name": "executor_id", "label": "Executor", "type": "query", "datasource": DS,
    "query": {"query": "label_values(canopy_executor_tasks_total, executor_id)", "refId": "executors"},
    "multi": True, "includeAll": True, "allValue": ".*", "hide": 0, "refresh": 2,
    "options": [], "regex": "", "sort": 1, "skipUrlSync": False,
}

executors = dashboard(
    "canopy-executors",
    "Canopy executors",
    "One run's executors: tasks, durations, balance, heap, CPU and memory per executor (or pod).",
    layout([
        ("Completed tasks", "timeseries", "short", [
            (f'sum by (executor_id) (canopy_executor_tasks_total{{outcome="ok", {EXEC}}})', "{{executor_id}}")]),
        ("Failed tasks", "timeseries", "short", [
            (f'sum by (executor_id) (canopy_executor_tasks_total{{outcome="failed", {EXEC}}})', "{{executor_id}}")]),
        ("Task rate by kind", "timeseries", "ops", [
            (f'sum by (executor_id, task_kind) (rate(canopy_executor_tasks_total{{outcome="ok", {EXEC}}}[$__rate_interval]))', "{{executor_id}} {{task_kind}}")]),
        ("Task duration p95 by phase", "timeseries", "s", [
            (f'histogram_quantile(0.95, sum by (le, phase) (rate(canopy_executor_task_duration_seconds_bucket{{{EXEC}}}[$__rate_interval])))', "p95 {{phase}}"),
            (f'sum by (phase) (rate(canopy_executor_task_duration_seconds_sum{{{EXEC}}}[$__rate_interval])) / sum by (phase) (rate(canopy_executor_task_duration_seconds_count{{{EXEC}}}[$__rate_interval]))', "mean {{phase}}")]),
        ("Task load balance (share of completed tasks)", "bargauge", "percentunit", [
            (f'sum by (executor_id) (canopy_executor_tasks_total{{outcome="ok", {EXEC}}}) / ignoring(executor_id) group_left sum(canopy_executor_tasks_total{{outcome="ok", {EXEC}}})', "{{executor_id}}")]),
        ("Busy time by phase", "timeseries", "percentunit", [
            (f'sum by (executor_id, phase) (rate(canopy_executor_task_duration_seconds_sum{{{EXEC}}}[$__rate_interval]))', "{{executor_id}} {{phase}}")]),
        ("Heap used", "timeseries", "bytes", [
            (f'canopy_heap_live_bytes{{{EXEC}}}', "{{executor_id}} live"),
            (f'canopy_heap_peak_bytes{{{EXEC}}}', "{{executor_id}} peak")]),
        ("Allocation churn (Rust has no GC)", "timeseries", "Bps", [
            (f'rate(canopy_heap_allocated_bytes_total{{{EXEC}}}[$__rate_interval])', "{{executor_id}}")]),
        ("CPU per pod", "timeseries", "percentunit", [
            ('sum by (pod) (rate(container_cpu_usage_seconds_total{container="executor"}[$__rate_interval]))'
             f' or sum by (executor_id) (rate(canopy_process_cpu_seconds_total{{{EXEC}}}[$__rate_interval]))', "{{pod}}{{executor_id}}")]),
        ("Memory per pod", "timeseries", "bytes", [
            ('sum by (pod) (container_memory_working_set_bytes{container="executor"})'
             f' or sum by (executor_id) (process_resident_memory_bytes{{{EXEC}}})', "{{pod}}{{executor_id}}")]),
        ("Rows held", "timeseries", "short", [
            (f'canopy_executor_rows_held{{{EXEC}}}', "{{executor_id}}")]),
        ("Network", "timeseries", "Bps", [
            (f'rate(canopy_executor_received_bytes_total{{{EXEC}}}[$__rate_interval])', "{{executor_id}} received"),
            (f'rate(canopy_executor_sent_bytes_total{{{EXEC}}}[$__rate_interval])', "{{executor_id}} sent")]),
        ("Running tasks", "timeseries", "short", [
            (f'canopy_executor_tasks_running{{{EXEC}}}', "{{executor_id}}")]),
        ("Executors up", "stat", "short", [
            ('sum(up{job="canopy-executor"})', "up")]),
    ]),
    [EXECUTOR_VAR],
)

runs = dashboard(
    "canopy-runs",
    "Canopy runs by executor count",
    "Scaling sweeps: time, speedup, accuracy and per-executor work against the executor count "
    "(the last run of each count), plus the driver's autoscaling signals.",
    layout([
        ("Training time vs executors", "barchart", "s", [
            ("max by (executors) (canopy_run_train_seconds)", "{{executors}}")]),
        ("Total time vs executors", "barchart", "s", [
            ("max by (executors) (canopy_run_total_seconds)", "{{executors}}")]),
        ("Speedup vs 1 executor", "barchart", "short", [
            ('scalar(max(canopy_run_train_seconds{executors="1"})) / max by (executors) (canopy_run_train_seconds)', "{{executors}}")]),
        ("Accuracy and weighted F1 vs executors", "barchart", "percentunit", [
            ("max by (executors) (canopy_run_accuracy)", "accuracy {{executors}}"),
            ("max by (executors) (canopy_run_weighted_f1)", "weighted F1 {{executors}}")]),
        ("Tasks per executor", "barchart", "short", [
            ("max by (executors, executor_id) (canopy_run_executor_tasks)", "{{executors}} {{executor_id}}")]),
        ("Busy seconds per executor", "barchart", "s", [
            ("max by (executors, executor_id) (canopy_run_executor_busy_seconds)", "{{executors}} {{executor_id}}")]),
        ("Peak heap per executor and driver", "barchart", "bytes", [
            ("max by (executors, executor_id) (canopy_run_executor_peak_heap_bytes)", "{{executors}} {{executor_id}}"),
            ("max by (executors) (canopy_run_driver_peak_heap_bytes)", "{{executors}} driver")]),
        ("Driver phase time (mean)", "timeseries", "s", [
            ("sum by (phase) (canopy_driver_phase_duration_seconds_sum) / sum by (phase) (canopy_driver_phase_duration_seconds_count)", "{{phase}}")]),
        ("Autoscaling: executors wanted per registered", "timeseries", "short", [
            ("max(canopy_driver_saturation_ratio)", "saturation (wanted / registered)"),
            ("max(canopy_driver_tasks_pending)", "tasks pending"),
            ("max(canopy_driver_tasks_running)", "tasks running")]),
        ("Executors wanted, registered and working", "timeseries", "short", [
            ("max(canopy_driver_executors_wanted)", "wanted"),
            ("max(canopy_driver_executors_registered)", "registered"),
            ("max(canopy_driver_executors_alive)", "working for the run")]),
        ("Retries and lost executors", "timeseries", "short", [
            ("max(canopy_driver_tasks_retried_total)", "retried steps"),
            ("max(canopy_driver_executor_failures_total)", "lost executors")]),
        ("Runs", "table", "short", [
            ("sum by (mode, outcome) (canopy_driver_runs_total)", "{{mode}} {{outcome}}"),
            ("max by (run_id, mode) (canopy_driver_run_info)", "{{run_id}}")]),
    ]),
    [],
)

for name, board in [("canopy-executors.json", executors), ("canopy-runs.json", runs)]:
    (HERE / "grafana" / name).write_text(json.dumps(board, indent=2) + "\n")
