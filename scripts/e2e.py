#!/usr/bin/env python3
"""End-to-end proof that the dashboards and alert rules work against what the exporter serves.

    python3 scripts/e2e.py --bin-dir target/debug

Starts, all on 127.0.0.1 with free ports and a temporary directory: the sandbox simulator
(`krs-sandbox-sim`) with a scenario written here, the exporter watching it (1 s polling; a
`tasks:` list plus discovery with the lifecycle on, 2 s task-list reads), a
webhook receiver (in this process), Debian's `prometheus-alertmanager` routing every alert to
that webhook, and Debian's `prometheus` (1 s scrape and evaluation) loading
deploy/prometheus/alerts.yml. Then checks:

1. `promtool check rules` and `promtool test rules` pass; `promtool check metrics` on a live
   scrape prints nothing;
2. every PromQL expression of every dashboard (template variables substituted, the variables'
   label_values queries too) runs without error, and the panels in EXPECT_DATA return data;
3. every alert rule evaluates without error; KrsRedZoneDownload fires for the task whose
   download turns Red and for no other, reaches the webhook with the task name, file name and
   SHA-256, does not flap, and resolves once that task leaves the watch list (config rewritten,
   POST /-/reload);
4. each lifecycle alert (stuck task, sandbox unhealthy, bases outdated, polling paused, discovery
   failing, storage write failing) evaluates to what the scenario implies, pending where it
   returns a series; and the Red file of each of 8 detonating tasks reaches the webhook, timed
   from its appearance at the simulator (p50/p99 printed, p99 within 5 s).
5. Prometheus (with `--enable-feature=exemplar-storage`) scrapes OpenMetrics and
   `/api/v1/query_exemplars` returns the Red counter's exemplar naming the task and file.

Prints PASS/FAIL per check and a final `N passed, M failed` line; exits 1 on any failure. Waits
on conditions with deadlines, never on bare sleeps; stops every process it started on exit.
Needs: python3 (standard library only), prometheus, prometheus-alertmanager, promtool
(`apt-get install prometheus prometheus-alertmanager`) and the two binaries in --bin-dir.
"""

import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALERTS = os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")
ALERT_TESTS = os.path.join(ROOT, "deploy", "prometheus", "alerts.test.yml")
DASHBOARDS = os.path.join(ROOT, "grafana", "dashboards")
POLL = 0.5  # seconds between two looks at a condition

RED_TASK = {"id": "0d5b4e44-4c0e-4f0b-9a57-3f2d1b9e6c71", "name": "e2e-red-task"}
GREEN_TASK = {"id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "name": "e2e-green-task"}
FLAKY_TASK = {"id": "5b2f9c1d-3e4a-4f6b-8c7d-9e0a1b2c3d4e", "name": "e2e-flaky-adware"}
MISSING_TASK = {"id": "3f1c9a2e-8b4d-4e6f-a1c3-5d7e9f0b2a4c", "name": "e2e-never-existed"}
RED_FILE = {"name": "payload.exe", "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "type": "PE32 executable", "yara": "E2E_Loader", "detection": "HEUR:Trojan.Win32.Generic"}
USERNAME, PASSWORD = "e2e", "e2e-password"

# The simulator's scenario (format: docs/simulator.md). The Red file appears 8 s after start,
# after the exporter's baseline poll, so the fleet counters count it. The flaky task answers an
# undecodable body, then a 500, before answering normally: transport failures, API errors and
# retries all get data. The missing task is watched but unknown to the simulator (404).
SCENARIO_HEAD = f"""\
credentials:
  username: {USERNAME}
  password: {PASSWORD}
health:
  incidents:
    - {{from: 0s, checks: [{{name: enough_free_disk_space, value: false}}]}}
version:
  bases_age: 3d
tasks:
  - id: {RED_TASK["id"]}
    name: {RED_TASK["name"]}
    created: -3d
    files:
      - {{name: invoice.doc, zone: Grey, size: 48213, type: Microsoft Word document, https: true}}
      - name: {RED_FILE["name"]}
        zone: Red
        size: 245760
        type: {RED_FILE["type"]}
        sha256: {RED_FILE["sha256"]}
        after: 8s
        detections: ["{RED_FILE["detection"]}"]
        yara: [{RED_FILE["yara"]}]
  - id: {GREEN_TASK["id"]}
    name: {GREEN_TASK["name"]}
    created: -3d
    files:
      - {{name: jquery.min.js, zone: Green, size: 87533, type: JavaScript, https: true}}
      - {{name: logo.png, zone: Green, size: 6144, type: PNG image data, after: 5s}}
  - id: {FLAKY_TASK["id"]}
    name: {FLAKY_TASK["name"]}
    created: -3d
    files:
      - name: setup.exe
        zone: Yellow
        size: 3145728
        type: PE32 executable
        detections: ["not-a-virus:HEUR:AdWare.Win32.Generic"]
    faults:
      - {{body: malformed}}
      - {{status: 500, error: {{code: 1, message: internal error}}}}
"""

# Tasks the exporter finds only through the task list (discovery, lifecycle on); the static
# tasks above were created three days ago, outside discovery's one-day lookback, so removing
# one from `tasks:` still removes it. A task stuck processing for three hours, one completed
# with a verdict, one failed, and DETONATING tasks each dropping a Red file at a known time
# while processing: the time from that moment to the webhook is the end-to-end latency.
STUCK_TASK = {"id": "a1c2e3f4-0b1d-4e2f-8a3b-4c5d6e7f8091", "name": "e2e-stuck.doc"}
DONE_TASK = {"id": "b2d3f405-1c2e-4f30-9b4c-5d6e7f809102", "name": "e2e-done.pdf"}
FAILED_TASK = {"id": "c3e40516-2d3f-4041-8c5d-6e7f80910213", "name": "e2e-failed.exe"}
DETONATING = [{"id": f"d4f5{k:04x}-3e40-4152-9d6e-7f8091021324", "name": f"e2e-detonating-{k}.exe",
               "red_after": 14 + 3 * k} for k in range(8)]

LIFECYCLE_TASKS = f"""\
  - id: {STUCK_TASK["id"]}
    created: -3h
    timeline: [{{at: -3h, state: uploading}}, {{at: -179m, state: processing}}]
    sample: {{original_file_name: {STUCK_TASK["name"]}}}
  - id: {DONE_TASK["id"]}
    created: -2h
    timeline: [{{at: -2h, state: processing}}, {{at: -110m, state: Completed}}]
    sample: {{original_file_name: {DONE_TASK["name"]}}}
    verdict: Malware
    files:
      - {{name: dropper.dll, zone: Orange, size: 4096, type: PE32 DLL}}
  - id: {FAILED_TASK["id"]}
    created: -1h
    timeline: [{{at: -1h, state: processing}}, {{at: -50m, state: Processing failed}}]
    sample: {{original_file_name: {FAILED_TASK["name"]}}}
""" + "".join(f"""\
  - id: {t["id"]}
    created: -30s
    timeline: [{{at: -30s, state: processing}}, {{at: {t["red_after"] + 20}s, state: completed}}]
    sample: {{original_file_name: {t["name"]}}}
    files:
      - {{name: beacon-{i}.exe, zone: Red, size: 73728, type: PE32 executable, after: {t["red_after"]}s}}
""" for i, t in enumerate(DETONATING))

SCENARIO = SCENARIO_HEAD + LIFECYCLE_TASKS
DETONATING_IDS = {t["id"] for t in DETONATING}


def exporter_config(sandbox_port, password_file, tasks):
    lines = [
        "sandbox:",
        f"  url: http://127.0.0.1:{sandbox_port}",
        f"  username: {USERNAME}",
        f"  password_file: {password_file}",
        "  timeout: 500ms",
        "polling:",
        "  interval: 1s",
        "  concurrency: 4",
        "  retry:",
        "    initial_interval: 50ms",
        "    max_interval: 200ms",
        "    max_elapsed_time: 400ms",
        "discovery:",
        "  interval: 2s",
        "  lookback: 1d",
        "  labels: {team: discovered}",
        "tasks:",
    ]
    for t in tasks:
        lines += [f"  - id: {t['id']}", f"    name: {t['name']}", "    labels: {team: e2e}"]
    return "\n".join(lines) + "\n"


# Panels that must return data with the scenario above (dashboard uid, panel title). Every other
# panel must run without error; none is expected to be empty, but these are the promises.
EXPECT_DATA = {
    ("krs-overview", "Watched tasks"), ("krs-overview", "Tasks with Red downloads"),
    ("krs-overview", "Red files"), ("krs-overview", "Tasks failing"),
    ("krs-overview", "Red-zone tasks"), ("krs-overview", "Red-zone files"),
    ("krs-overview", "New downloads (last hour)"), ("krs-overview", "New YARA hits (last hour)"),
    ("krs-overview", "Downloads by danger zone"), ("krs-overview", "New downloads per hour, by danger zone"),
    ("krs-overview", "New YARA hits per hour, by rule"), ("krs-overview", "Top YARA rules"),
    ("krs-overview", "Top detections"), ("krs-overview", "Tasks"),
    ("krs-exporter", "Exporters up"), ("krs-exporter", "Sandbox API"), ("krs-exporter", "Watched tasks"),
    ("krs-exporter", "Shards"), ("krs-exporter", "Shards without a replica"),
    ("krs-exporter", "Replicas up per shard"), ("krs-exporter", "Watched tasks per shard"),
    ("krs-exporter", "Config reload"), ("krs-exporter", "Last successful reload"), ("krs-exporter", "Version"),
    ("krs-exporter", "API requests by status code"), ("krs-exporter", "Sandbox error codes"),
    ("krs-exporter", "Transport failures by reason"), ("krs-exporter", "Retries"), ("krs-exporter", "Polls"),
    ("krs-exporter", "Tasks up / failing"), ("krs-exporter", "API request latency"),
    ("krs-exporter", "Poll duration"), ("krs-exporter", "Data age"), ("krs-exporter", "Last HTTP status per task"),
    ("krs-exporter", "CPU"), ("krs-exporter", "Resident memory"), ("krs-exporter", "Open file descriptors"),
    ("krs-exporter", "Uptime"), ("krs-exporter", "Scrape duration"), ("krs-exporter", "Samples per scrape"),
    ("krs-overview", "Detonations in flight"), ("krs-overview", "Tasks by state"), ("krs-overview", "Sample verdicts"),
    ("krs-overview", "Discovered tasks"), ("krs-overview", "Tasks left out by max_tasks"),
    ("krs-overview", "Age of the last task-list read"), ("krs-overview", "Sandbox reachable"),
    ("krs-overview", "Sandbox healthy"), ("krs-overview", "Anti-virus bases age"),
    ("krs-overview", "Failing health checks"), ("krs-overview", "Polling paused, by reason"),
}
# Panels whose every target must have data; elsewhere one target with data is enough (the
# "Polls" panel's panicked-polls target, say, is rightly empty).
EXPECT_DATA_EVERY_TARGET = {("krs-overview", "Tasks"), ("krs-overview", "Age of the last task-list read")}

# What each alert of the lifecycle groups must evaluate to with the scenario above: the label
# values of the series its expression returns (empty: nothing). Their `for:` (5 to 30 min) is
# longer than this test, so a non-empty expression shows as a pending alert; promtool's unit
# tests (alerts.test.yml) cover the firing and the timing.
LIFECYCLE_ALERTS = {
    "KrsTaskStuckProcessing": ("task_id", {STUCK_TASK["id"]}),
    "KrsSandboxUnhealthy": ("job", {"krs-exporter"}),
    "KrsSandboxBasesOutdated": ("job", {"krs-exporter"}),
    "KrsPollingPaused": ("instance", set()),
    "KrsDiscoveryFailing": ("instance", set()),
    "KrsStorageWriteFailing": ("instance", set()),
}
# Series that must exist for an empty result above to mean "healthy" rather than "no input".
ALERT_INPUTS = {
    "KrsPollingPaused": "krs_api_paused",
    "KrsDiscoveryFailing": "krs_discovery_last_success_timestamp_seconds",
}


class Abort(Exception):
    """A step that later checks depend on failed: stop here."""


class Report:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, name, detail=""):
        self.passed += 1
        print(f"PASS {name}" + (f" ({detail})" if detail else ""), flush=True)

    def fail(self, name, detail=""):
        self.failed += 1
        print(f"FAIL {name}" + (f": {detail}" if detail else ""), flush=True)

    def check(self, name, ok, detail="", info=""):
        """One check: `detail` explains a failure, `info` decorates a pass."""
        if ok:
            self.ok(name, info)
        else:
            self.fail(name, detail)
        return ok

    def require(self, name, ok, detail="", info=""):
        if not self.check(name, ok, detail, info):
            raise Abort(name)


def wait_for(condition, timeout):
    """condition() until it returns something truthy or the deadline passes; the last value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except (OSError, ValueError, KeyError):
            value = None
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(POLL)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=5):
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Processes:
    """Every process this test starts, each with its log file; all stopped by stop_all()."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []

    def start(self, name, argv):
        log = open(os.path.join(self.tmp, f"{name}.log"), "wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        self.procs.append((name, proc, log))
        return proc

    def alive(self, name):
        return any(n == name and p.poll() is None for n, p, _ in self.procs)

    def log_tail(self, name, lines=15):
        try:
            with open(os.path.join(self.tmp, f"{name}.log"), "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def stop_all(self):
        """SIGTERM to each process group, SIGKILL to those still there 5 s later."""
        for _, proc, _ in self.procs:
            signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for _, proc, log in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                signal_group(proc, signal.SIGKILL)
                proc.wait()
            log.close()


def signal_group(proc, sig):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass  # exited in between


class Webhook:
    """Alertmanager's receiver: records every notification POSTed to it."""

    def __init__(self):
        self.notifications = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                doc = json.loads(body)
                doc["received_at"] = time.monotonic()
                with outer.lock:
                    outer.notifications.append(doc)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self, alertname, status=None):
        """(notification status, alert) for every alert of that name received so far."""
        with self.lock:
            return [a for n in self.notifications for a in n.get("alerts", [])
                    if a["labels"].get("alertname") == alertname and (status is None or a["status"] == status)]

    def first_firing(self, alertname):
        """task_id → monotonic time of the first notification carrying that alert firing."""
        first = {}
        with self.lock:
            for n in self.notifications:
                for a in n.get("alerts", []):
                    if a["labels"].get("alertname") == alertname and a["status"] == "firing":
                        tid = a["labels"].get("task_id")
                        first[tid] = min(first.get(tid, n["received_at"]), n["received_at"])
        return first

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Prometheus:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def api(self, path, **params):
        status, body = http("GET", f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}", timeout=10)
        doc = json.loads(body)
        if status != 200 or doc.get("status") != "success":
            raise RuntimeError(f"{path} {params}: HTTP {status}: {doc.get('error', body[:200])}")
        return doc["data"]

    def query(self, expr):
        return self.api("query", query=expr)["result"]

    def query_range(self, expr, seconds, step):
        end = time.time()
        return self.api("query_range", query=expr, start=end - seconds, end=end, step=step)["result"]

    def firing(self, alertname):
        return [a for a in self.api("alerts")["alerts"]
                if a["labels"].get("alertname") == alertname and a["state"] == "firing"]


def find_tools(bin_dir):
    tools = {
        "krs-exporter": os.path.join(bin_dir, "krs-exporter"),
        "krs-sandbox-sim": os.path.join(bin_dir, "krs-sandbox-sim"),
        "prometheus": shutil.which("prometheus"),
        "alertmanager": shutil.which("prometheus-alertmanager") or shutil.which("alertmanager"),
        "promtool": shutil.which("promtool"),
    }
    missing = [name for name, path in tools.items() if not path or not os.access(path, os.X_OK)]
    return tools, missing


def regex_value(values):
    """A Grafana multi-value variable as it lands in a `=~"..."` matcher: escaped, in a group."""
    escaped = [re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\\\1", v) for v in values]
    return "(" + "|".join(escaped) + ")" if len(escaped) != 1 else escaped[0]


def substitute(expr, variables, panel):
    """What Grafana sends for one target: variables and interval macros replaced."""
    rate_interval = panel.get("interval") or "30s"  # >= 4 scrape intervals, and the panel's minimum
    for name, value in sorted({**variables, "__rate_interval": rate_interval, "__interval": "15s",
                               "__range": "5m", "__range_s": "300", "__interval_ms": "15000"}.items(),
                              key=lambda kv: -len(kv[0])):
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    return expr


def check_metrics_lint(report, tools, exporter_port):
    status, body = http("GET", f"http://127.0.0.1:{exporter_port}/metrics")
    out = subprocess.run([tools["promtool"], "check", "metrics"], input=body.encode(), capture_output=True)
    text = (out.stdout + out.stderr).decode().strip()
    report.check("promtool check metrics on a live scrape reports nothing",
                 status == 200 and out.returncode == 0 and not text,
                 f"HTTP {status}, exit {out.returncode}: {text[:500]}", f"{len(body.splitlines())} lines")


def check_exemplars(report, prom):
    """Prometheus negotiates OpenMetrics and keeps the Red counter's exemplar: the file."""
    def red_exemplar():
        end = time.time()
        for series in prom.api("query_exemplars", query='krs_downloads_total{danger_zone="Red"}',
                               start=end - 600, end=end):
            for e in series.get("exemplars", []):
                if e["labels"] == {"task_id": RED_TASK["id"], "sha256": RED_FILE["sha256"]}:
                    return e
        return None
    found = wait_for(red_exemplar, 20)
    report.check("query_exemplars names the Red task and file (OpenMetrics scrape)", found,
                 json.dumps(prom.api("query_exemplars", query="krs_downloads_total",
                                     start=time.time() - 600, end=time.time()))[:600])


def check_dashboards(report, prom, exporter_port):
    for fname in sorted(os.listdir(DASHBOARDS)):
        if not fname.endswith(".json"):
            continue
        with open(os.path.join(DASHBOARDS, fname), encoding="utf-8") as f:
            dash = json.load(f)
        uid = dash["uid"]
        variables = {}
        for var in dash["templating"]["list"]:
            if var["type"] != "query":
                continue
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query.strip())
            if not m:
                report.fail(f"{uid}: variable {var['name']}", f"not a label_values query: {query}")
                continue
            selector = substitute(m.group(1), variables, {})
            try:
                values = prom.api(f"label/{m.group(2)}/values", **{"match[]": selector})
            except RuntimeError as e:
                report.fail(f"{uid}: variable {var['name']} query runs", str(e))
                continue
            report.check(f"{uid}: variable {var['name']} lists values", bool(values), query, ", ".join(values))
            variables[var["name"]] = regex_value(values) if values else ".+"
        if "instance" in variables:
            report.check(f"{uid}: variable instance includes the exporter",
                         f"127\\\\.0\\\\.0\\\\.1:{exporter_port}" in variables["instance"], variables["instance"])
        titles = set()
        for panel in [p for top in dash["panels"] for p in [top] + top.get("panels", [])]:
            if panel.get("type") == "row":
                continue
            title = panel["title"]
            titles.add(title)
            with_data = []
            errors = []
            for target in panel.get("targets", []):
                expr = substitute(target["expr"], variables, panel)
                try:
                    result = prom.query(expr)
                    if target.get("range", True) and not target.get("instant", False):
                        result = prom.query_range(expr, 120, 5) or result
                    with_data.append(bool(result))
                except RuntimeError as e:
                    errors.append(f"{target.get('refId')}: {e}")
            report.check(f"{uid}: panel '{title}' queries run", not errors, "; ".join(errors))
            if (uid, title) in EXPECT_DATA and not errors:
                every = (uid, title) in EXPECT_DATA_EVERY_TARGET
                ok = all(with_data) if every else any(with_data)
                report.check(f"{uid}: panel '{title}' shows data", ok,
                             f"targets with data: {with_data}" if not ok else "")
        for expected_uid, title in sorted(EXPECT_DATA):
            if expected_uid == uid and title not in titles:
                report.fail(f"{uid}: panel '{title}' exists", "EXPECT_DATA names a panel the dashboard lacks")


def check_rules_evaluate(report, prom):
    groups = prom.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    report.check("Prometheus loaded the alert rules of alerts.yml", len(rules) > 0 and all(r["type"] == "alerting" for r in rules),
                 json.dumps(groups)[:400], f"{len(rules)} rules")
    for rule in rules:
        problems = []
        if rule.get("health") != "ok" or rule.get("lastError"):
            problems.append(f"health {rule.get('health')}: {rule.get('lastError')}")
        try:
            prom.query(rule["query"])
        except RuntimeError as e:
            problems.append(str(e))
        report.check(f"alert rule {rule['name']} evaluates", not problems, "; ".join(problems))


def check_lifecycle_alerts(report, prom):
    """Each lifecycle alert's expression returns what the scenario implies; pending when it does."""
    rules = {r["name"]: r for g in prom.api("rules")["groups"] for r in g["rules"]}
    for name, (label, expected) in LIFECYCLE_ALERTS.items():
        rule = rules.get(name)
        if not report.check(f"alert rule {name} is loaded", rule is not None):
            continue
        try:
            got = {r["metric"].get(label, "") for r in prom.query(rule["query"])}
        except RuntimeError as e:
            report.fail(f"alert {name} evaluates as expected", str(e))
            continue
        report.check(f"alert {name} evaluates as expected", got == expected,
                     f"{label} {sorted(got)}, expected {sorted(expected)}",
                     f"{label} {sorted(got)}" if got else "nothing, as expected")
        if expected:
            state = wait_for(lambda: {r["name"]: r for g in prom.api("rules")["groups"]
                                      for r in g["rules"]}[name]["state"] in ("pending", "firing"), 10)
            report.check(f"alert {name} is pending", state, json.dumps(rule.get("alerts"))[:300])
        if name in ALERT_INPUTS:
            report.check(f"alert {name}: its input {ALERT_INPUTS[name]} exists",
                         bool(prom.query(ALERT_INPUTS[name])), "an empty result would prove nothing")


def check_red_latency(report, webhook, sim_started):
    """The Red file of each detonating task, from its appearance at the simulator to the webhook."""
    last = max(t["red_after"] for t in DETONATING)
    wait_for(lambda: DETONATING_IDS <= set(webhook.first_firing("KrsRedZoneDownload")),
             max(5, last + 30 - (time.monotonic() - sim_started)))
    first = webhook.first_firing("KrsRedZoneDownload")
    latencies = sorted(first[t["id"]] - (sim_started + t["red_after"]) for t in DETONATING if t["id"] in first)
    missing = [t["name"] for t in DETONATING if t["id"] not in first]
    if not report.check("every detonating task's Red file reaches the webhook", not missing, f"missing: {missing}"):
        return
    def quantile(q):  # nearest rank
        return latencies[max(1, math.ceil(q * len(latencies))) - 1]
    p50, p99 = quantile(0.50), quantile(0.99)
    # 1 s active polling + 1 s scrape + 1 s evaluation + 1 s group_wait, with a second of slack.
    report.check("a Red file on a detonating task reaches the webhook within 5 s (p99)", p99 <= 5,
                 f"p50 {p50:.1f} s, p99 {p99:.1f} s",
                 f"{len(latencies)} files: p50 {p50:.2f} s, p99 {p99:.2f} s, max {latencies[-1]:.2f} s, "
                 f"min {latencies[0]:.2f} s")


def run(args, report, procs, webhook):
    tools, missing = find_tools(args.bin_dir)
    report.require("binaries present", not missing,
                   f"missing: {', '.join(missing)} (build with `cargo build`; apt-get install prometheus prometheus-alertmanager)")

    for name, argv in (("promtool check rules", [tools["promtool"], "check", "rules", ALERTS]),
                       ("promtool test rules", [tools["promtool"], "test", "rules", ALERT_TESTS])):
        out = subprocess.run(argv, capture_output=True, text=True)
        report.check(name, out.returncode == 0, (out.stdout + out.stderr).strip()[-800:] if out.returncode else "")

    tmp = procs.tmp
    sim_port, exp_port, am_port, prom_port = (free_port() for _ in range(4))
    scenario = os.path.join(tmp, "scenario.yml")
    with open(scenario, "w") as f:
        f.write(SCENARIO)
    procs.start("simulator", [tools["krs-sandbox-sim"], "--scenario", scenario, "--listen", f"127.0.0.1:{sim_port}"])
    sim_started = time.monotonic()
    report.require("simulator listens", wait_for(lambda: port_open(sim_port), 15), procs.log_tail("simulator"))

    password_file = os.path.join(tmp, "password")
    with open(password_file, "w") as f:
        f.write(PASSWORD + "\n")
    config = os.path.join(tmp, "krs-exporter.yml")
    all_tasks = [RED_TASK, GREEN_TASK, FLAKY_TASK, MISSING_TASK]
    with open(config, "w") as f:
        f.write(exporter_config(sim_port, password_file, all_tasks))
    procs.start("exporter", [tools["krs-exporter"], "--config.file", config,
                             f"--storage.path={os.path.join(tmp, 'data')}",
                             "--web.listen-address", f"127.0.0.1:{exp_port}", "--log.level", "debug"])
    exporter = f"http://127.0.0.1:{exp_port}"
    report.require("exporter becomes ready", wait_for(lambda: http("GET", f"{exporter}/-/ready")[0] == 200, 20),
                   procs.log_tail("exporter"))

    am_config = os.path.join(tmp, "alertmanager.yml")
    with open(am_config, "w") as f:
        f.write(f"""\
route:
  receiver: webhook
  group_by: ['...']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: webhook
    webhook_configs:
      - url: http://127.0.0.1:{webhook.port}/
        send_resolved: true
""")
    procs.start("alertmanager", [tools["alertmanager"], f"--config.file={am_config}",
                                 f"--storage.path={os.path.join(tmp, 'am')}",
                                 f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="])
    report.require("alertmanager becomes ready",
                   wait_for(lambda: http("GET", f"http://127.0.0.1:{am_port}/-/ready")[0] == 200, 20),
                   procs.log_tail("alertmanager"))

    prom_config = os.path.join(tmp, "prometheus.yml")
    with open(prom_config, "w") as f:
        f.write(f"""\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {ALERTS}
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['127.0.0.1:{am_port}']
scrape_configs:
  - job_name: krs-exporter
    static_configs:
      - targets: ['127.0.0.1:{exp_port}']
""")
    procs.start("prometheus", [tools["prometheus"], f"--config.file={prom_config}",
                               f"--storage.tsdb.path={os.path.join(tmp, 'prometheus')}",
                               f"--web.listen-address=127.0.0.1:{prom_port}",
                               "--enable-feature=exemplar-storage"])
    prom = Prometheus(prom_port)
    report.require("prometheus becomes ready",
                   wait_for(lambda: http("GET", f"{prom.base}/-/ready")[0] == 200, 30), procs.log_tail("prometheus"))
    report.require("prometheus scrapes the exporter",
                   wait_for(lambda: prom.query('up{job="krs-exporter"} == 1'), 20), procs.log_tail("prometheus"))

    # The Red file appears 8 s after the simulator started.
    red_series = wait_for(lambda: prom.query(f'krs_download_info{{danger_zone="Red", task_id="{RED_TASK["id"]}"}}'), 40)
    report.require("the Red download reaches Prometheus", red_series, procs.log_tail("exporter"))
    static_red = [s for s in prom.query('krs_download_info{danger_zone="Red"}')
                  if s["metric"].get("task_id") not in DETONATING_IDS]
    report.check("no other static task has a Red download", all(
        s["metric"].get("task_id") == RED_TASK["id"] for s in static_red), json.dumps(static_red)[:400])
    check_metrics_lint(report, tools, exp_port)
    check_exemplars(report, prom)

    def red_firing():
        return [a for a in prom.firing("KrsRedZoneDownload") if a["labels"].get("task_id") not in DETONATING_IDS]

    firing = wait_for(red_firing, 20)
    report.require("KrsRedZoneDownload fires", firing, procs.log_tail("prometheus"),
                   f"{time.monotonic() - sim_started:.0f} s after the simulator started; the file appears at 8 s")
    labels = firing[0]["labels"]
    report.check("KrsRedZoneDownload fires for the Red task only, once",
                 len(firing) == 1 and labels.get("task_id") == RED_TASK["id"], json.dumps([a["labels"] for a in firing]))
    report.check("KrsRedZoneDownload names the task and the file",
                 labels.get("name") == RED_TASK["name"] and labels.get("file_name") == RED_FILE["name"]
                 and labels.get("sha256") == RED_FILE["sha256"], json.dumps(labels))

    def static_alerts(status=None):
        return [a for a in webhook.alerts("KrsRedZoneDownload", status) if a["labels"].get("task_id") not in DETONATING_IDS]

    received = wait_for(lambda: static_alerts("firing"), 20)
    report.check("the webhook receives KrsRedZoneDownload", received, procs.log_tail("alertmanager"))
    if received:
        alert = received[0]
        report.check("the notification carries the task name, file name and SHA-256",
                     alert["labels"].get("name") == RED_TASK["name"] and alert["labels"].get("file_name") == RED_FILE["name"]
                     and alert["labels"].get("sha256") == RED_FILE["sha256"]
                     and RED_TASK["name"] in alert["annotations"].get("summary", ""), json.dumps(alert)[:600])
        report.check("no Red-zone notification for any other task",
                     all(a["labels"].get("task_id") == RED_TASK["id"] for a in static_alerts()),
                     json.dumps([a["labels"] for a in static_alerts()])[:600])

    check_red_latency(report, webhook, sim_started)
    check_dashboards(report, prom, exp_port)
    check_rules_evaluate(report, prom)
    check_lifecycle_alerts(report, prom)

    report.check("the Red-zone alert did not flap while the task was watched",
                 not static_alerts("resolved") and len(red_firing()) == 1,
                 json.dumps([(a["status"], a["startsAt"]) for a in webhook.alerts("KrsRedZoneDownload")]))

    # The Red task leaves the watch list: its series vanish and, after keep_firing_for, the
    # alert resolves and the webhook hears it.
    with open(config, "w") as f:
        f.write(exporter_config(sim_port, password_file, [GREEN_TASK, FLAKY_TASK, MISSING_TASK]))
    status, body = http("POST", f"{exporter}/-/reload", body=b"")
    report.require("POST /-/reload accepts the new watch list", status == 200, f"HTTP {status}: {body[:300]}")
    gone = wait_for(lambda: not prom.query(f'krs_download_info{{task_id="{RED_TASK["id"]}"}}'), 20)
    report.check("the removed task's series vanish", gone)
    reloaded = time.monotonic()
    resolved = wait_for(lambda: static_alerts("resolved"), args.resolve_timeout)
    report.check("KrsRedZoneDownload resolves and the webhook hears it", resolved,
                 json.dumps(red_firing())[:400],
                 f"{time.monotonic() - reloaded:.0f} s after the reload; keep_firing_for is 2m")
    report.check("the exporter stayed up throughout", procs.alive("exporter") and procs.alive("simulator"),
                 procs.log_tail("exporter"))


def main():
    ap = argparse.ArgumentParser(description="End-to-end test: exporter + Prometheus + Alertmanager + dashboards.")
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "debug"),
                    help="directory holding krs-exporter and krs-sandbox-sim (default: target/debug)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs and logs)")
    ap.add_argument("--resolve-timeout", type=float, default=180,
                    help="seconds to wait for the resolved notification (keep_firing_for is 2m)")
    args = ap.parse_args()
    args.bin_dir = os.path.abspath(args.bin_dir)

    report = Report()
    tmp = tempfile.mkdtemp(prefix="krs-e2e-")
    procs = Processes(tmp)
    webhook = Webhook()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    started = time.monotonic()
    try:
        run(args, report, procs, webhook)
    except Abort as e:
        print(f"stopping: '{e}' failed and later checks depend on it", flush=True)
    except Exception as e:  # noqa: BLE001 - an unexpected error is one more failure, reported plainly
        report.fail("unexpected error", f"{type(e).__name__}: {e}")
    finally:
        procs.stop_all()
        webhook.stop()
        if args.keep or report.failed:
            print(f"logs and configs kept in {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"e2e took {time.monotonic() - started:.0f} s", flush=True)
    print(f"{report.passed} passed, {report.failed} failed", flush=True)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
