#!/usr/bin/env python3
"""Proof that the exporter's OpenMetrics answer is what the reference parser accepts.

    python3 scripts/check-openmetrics.py --bin-dir target/debug

Runs, on 127.0.0.1 with free ports and a temporary directory:

1. `krs-exporter --demo`, scraped with Prometheus 3's default `Accept` header, plainly and
   gzipped, until `krs_downloads_total` carries an exemplar; every scrape must be OpenMetrics
   1.0 that `prometheus_client.openmetrics.parser` reads whole;
2. the simulator (`krs-sandbox-sim`) with a scenario whose file names, types, rules,
   detections and hash are hostile (quotes, backslashes, newlines, braces, `# EOF`, bidi
   overrides), and the exporter watching it: once the hostile Red file is counted, the scrape
   must still parse and the exemplar must name the task, with the hash cleaned, not forged.

Prints PASS/FAIL per check and `N passed, M failed`; exits 1 on any failure. Needs python3 with
`prometheus-client` (scripts/test.sh installs it) and the two binaries in --bin-dir.
"""

import argparse
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

# Prometheus 3's default scrape_protocols, as it sends them.
PROMETHEUS_3_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TASK = "7e2f4a10-3b5c-4d6e-8f90-a1b2c3d4e5f6"
HOSTILE = 'a"} 1 # {x="\\\n# EOF\n\u202e}'
HOSTILE_SHA = 'ff"} # {task_id="forged"}\n9'
# The configuration refuses control characters in task names; quotes and braces pass.
HOSTILE_NAME = 'a"} 1 # {x="\\ # EOF }'


class Report:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"PASS {name}")
        else:
            self.failed += 1
            print(f"FAIL {name}" + (f"\n  {detail}" if detail else ""))
        return ok


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.25)
    return None


def scrape(port, accept=PROMETHEUS_3_ACCEPT, gzipped=False):
    """(content type, body) of /metrics."""
    headers = {"Accept": accept}
    if gzipped:
        headers["Accept-Encoding"] = "gzip"
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
        if r.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return r.headers.get("Content-Type"), body.decode("utf-8")


def parse(body):
    """The families the reference parser reads, or the error it raises."""
    try:
        return list(text_string_to_metric_families(body)), None
    except Exception as e:  # the parser raises ValueError and friends
        return None, f"{type(e).__name__}: {e}"


def exemplars(families, sample_name):
    return [s for f in families or [] for s in f.samples if s.name == sample_name and s.exemplar]


def start(argv, log):
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def check_demo(report, bin_dir, tmp):
    port = free_port()
    with open(os.path.join(tmp, "demo.log"), "w") as log:
        proc = start([os.path.join(bin_dir, "krs-exporter"), "--demo",
                      "--web.listen-address", f"127.0.0.1:{port}"], log)
    try:
        def counted():
            content_type, body = scrape(port)
            families, _ = parse(body)
            return (content_type, body) if exemplars(families, "krs_downloads_total") else None
        found = wait_for(counted, 120)
        if not report.check("demo: a new download carries an exemplar", found,
                            open(os.path.join(tmp, "demo.log")).read()[-800:]):
            return
        content_type, body = found
        report.check("demo: Prometheus 3's Accept gets OpenMetrics 1.0", content_type == OPENMETRICS_TYPE,
                     content_type)
        families, error = parse(body)
        report.check("demo: the reference parser reads the scrape", error is None, error)
        report.check("demo: the body ends with # EOF", body.endswith("\n# EOF\n"), body[-200:])
        _, zipped = scrape(port, gzipped=True)
        _, error = parse(zipped)
        report.check("demo: the gzipped scrape parses too", error is None, error)
        content_type, text = scrape(port, accept="text/plain;version=0.0.4")
        report.check("demo: text 0.0.4 when asked for", content_type.startswith("text/plain; version=0.0.4")
                     and "# EOF" not in text, content_type)
    finally:
        stop(proc)


def check_hostile(report, bin_dir, tmp):
    sim_port, exp_port = free_port(), free_port()
    q = json.dumps  # a JSON string is a YAML double-quoted scalar
    scenario = os.path.join(tmp, "hostile.yml")
    with open(scenario, "w") as f:
        f.write(f"""\
credentials:
  username: om
  password: om-password
tasks:
  - id: {TASK}
    name: {q(HOSTILE)}
    files:
      - {{name: {q(HOSTILE)}, zone: Grey, size: 1, type: {q(HOSTILE)}}}
      - name: {q(HOSTILE + ".exe")}
        zone: Red
        size: 2
        type: {q(HOSTILE)}
        sha256: {q(HOSTILE_SHA)}
        after: 4s
        detections: [{q(HOSTILE)}]
        yara: [{q(HOSTILE)}, {q("# EOF")}]
""")
    config = os.path.join(tmp, "krs-exporter.yml")
    with open(config, "w") as f:
        f.write(f"""\
sandbox:
  url: http://127.0.0.1:{sim_port}
  username: om
  password: om-password
  timeout: 500ms
polling:
  interval: 1s
tasks:
  - id: {TASK}
    name: {q(HOSTILE_NAME)}
""")
    with open(os.path.join(tmp, "sim.log"), "w") as log:
        sim = start([os.path.join(bin_dir, "krs-sandbox-sim"), "--scenario", scenario,
                     "--listen", f"127.0.0.1:{sim_port}"], log)
    with open(os.path.join(tmp, "exporter.log"), "w") as log:
        exporter = start([os.path.join(bin_dir, "krs-exporter"), "--config.file", config,
                          "--storage.path=", "--web.listen-address", f"127.0.0.1:{exp_port}"], log)
    try:
        def counted():
            _, body = scrape(exp_port)
            families, error = parse(body)
            if error:
                return ("error", error, body)
            found = exemplars(families, "krs_downloads_total")
            return ("ok", found, body) if found else None
        found = wait_for(counted, 60)
        logs = "".join(open(os.path.join(tmp, n)).read()[-400:] for n in ("sim.log", "exporter.log"))
        detail = logs
        if found and found[0] == "error":
            # The scrape itself, to tell a truncated exposition from a parser's complaint.
            detail = f"{found[1]}; the scrape's last 600 characters: {found[2][-600:]!r}"
        elif found:
            detail = found[1]
        if not report.check("hostile: the scrape parses and the Red file is counted",
                            found and found[0] == "ok", detail):
            return
        sample = found[1][0]
        labels = sample.exemplar.labels
        report.check("hostile: the exemplar names the task", labels.get("task_id") == TASK, str(labels))
        cleaned = "".join("\ufffd" if c in '\n"\\}' else c for c in HOSTILE_SHA)
        report.check("hostile: the hash is kept, cleaned, not forged",
                     labels.get("sha256") == cleaned and set(labels) == {"task_id", "sha256"}, str(labels))
        families, _ = parse(found[2])
        rules = {s.labels.get("rule") for s in exemplars(families, "krs_yara_hits_total")}
        report.check("hostile: the hostile rules carry exemplars too", "# EOF" in rules and len(rules) == 2, str(rules))
    finally:
        stop(exporter)
        stop(sim)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-dir", default="target/debug",
                    help="directory holding krs-exporter and krs-sandbox-sim (default: target/debug)")
    args = ap.parse_args()
    report = Report()
    with tempfile.TemporaryDirectory() as tmp:
        check_demo(report, args.bin_dir, tmp)
        check_hostile(report, args.bin_dir, tmp)
    print(f"{report.passed} passed, {report.failed} failed")
    sys.exit(1 if report.failed else 0)


if __name__ == "__main__":
    main()
