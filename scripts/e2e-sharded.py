#!/usr/bin/env python3
"""End-to-end proof that the dashboards and alert rules give the same answers sharded as unsharded.

    python3 scripts/e2e-sharded.py --bin-dir target/debug

Starts, on 127.0.0.1 with free ports: the sandbox simulator with a dozen tasks; one unsharded
exporter; a sharded fleet of the same watch list (shards 0, 1 and 2 of 3, plus a second replica
of shard 0); and two Prometheus servers (1 s scrape and evaluation, deploy/prometheus/alerts.yml),
one scraping the unsharded exporter and one the fleet, both as job `krs-exporter`. Then checks:

1. the tasks are spread over all three shards and the fleet polls each task exactly once per shard;
2. every dashboard query that promises a total or a per-task view (EQUAL below) gives the same
   answer on both servers, `instance` aside: counters summed over the shards once each, however
   many replicas a shard has, task series merged across shards; the YARA counters, whose first
   hit per replica no increase() sees, count each shard's later hits once (YARA below);
3. the same alerts fire on both (KrsRedZoneDownload per Red file, KrsYaraRuleMatched per rule,
   its value each shard's new files once); KrsShardsMissing and KrsShardingMismatch do not, and
   evaluate to nothing;
4. with shard 2 stopped, KrsShardsMissing's expression reports 1 missing shard (pending: it fires
   after 10 minutes) and the "Shards without a replica" panel shows 1; the unsharded side, 0.

Reuses scripts/e2e.py's helpers. Prints PASS/FAIL per check and `N passed, M failed`; exits 1 on
any failure.
"""

import argparse
import importlib.util
import json
import os
import shutil
import signal
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no scripts/__pycache__ from loading e2e.py
_spec = importlib.util.spec_from_file_location("e2e", os.path.join(HERE, "e2e.py"))
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)

SHARDS = 3
PASSWORD = e2e.PASSWORD
# Files that appear this long after the simulator starts, after every exporter's baseline poll,
# so the fleet counters count them: a first batch, then a second one with the same YARA rules
# (a rule's counter is created at its first hit, which increase() cannot see; the second batch
# is what the YARA alert and panels count).
# Late enough that every exporter has its baseline and both Prometheus servers have scraped the
# counters at zero before the new files appear (checked below), even on a loaded CI machine.
LATE, LATER = 25, 31

# Panels whose every target must give the same series and values on both servers (instance and
# job aside). The others are per replica by design (API traffic, process, scrape metrics, the
# shard panels themselves) or move with time (Data age: compared by series only).
EQUAL = {
    ("krs-overview", t) for t in (
        "Watched tasks", "Tasks with Red downloads", "Red files", "Tasks failing", "New downloads (last hour)",
        "Downloads by danger zone", "New downloads per hour, by danger zone", "Top YARA rules", "Top detections",
        "Red-zone tasks", "Red-zone files", "Tasks")
} | {("krs-exporter", t) for t in ("Watched tasks", "Tasks up / failing", "Last HTTP status per task")}
SAME_SERIES = {("krs-exporter", "Data age")}
# krs_yara_hits_total{rule} is created at a replica's first hit of the rule, and increase()
# cannot see a series' first value: each shard's first hit per rule is invisible (the alert's
# second branch catches it once Prometheus has 10 minutes of history; this test has not). The
# unsharded exporter's count depends on how its first hits fell between scrapes, so these are
# checked on the sharded side only: the second batch, one file per shard and rule, counted once
# per shard whatever its replicas.
YARA = {("krs-overview", "New YARA hits (last hour)"): 2 * SHARDS,
        ("krs-overview", "New YARA hits per hour, by rule"): SHARDS}


def fnv1a(data):
    h = 0xcbf29ce484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def shard_of(task_id):
    return fnv1a(task_id.lower().encode()) % SHARDS


def make_tasks():
    """Twelve tasks, four per shard. On every shard one task gets a Red file and one a Yellow
    file late, each matching a YARA rule, and then one more file matching the same rule; the
    other tasks keep their baseline files."""
    tasks, per_shard, n = [], {s: 0 for s in range(SHARDS)}, 0
    while any(v < 4 for v in per_shard.values()):
        tid = f"{n:08x}-5e4d-4a1c-9b2e-0000000000{n % 100:02d}"
        n += 1
        s = shard_of(tid)
        if per_shard[s] >= 4:
            continue
        k = per_shard[s]
        per_shard[s] += 1
        files = [{"name": f"page-{n}.html", "zone": "Green", "size": 1000 + n, "type": "HTML document"}]
        if k == 0:
            files.append({"name": f"payload-{n}.exe", "zone": "Red", "size": 2000 + n, "type": "PE32 executable",
                          "sha256": f"{n:064x}", "after": f"{LATE}s", "detections": ["HEUR:Trojan.Win32.Generic"],
                          "yara": ["E2E_Loader"]})
            files.append({"name": f"stage2-{n}.dll", "zone": "Yellow", "size": 2500 + n, "type": "PE32 DLL",
                          "after": f"{LATER}s", "yara": ["E2E_Loader"]})
        elif k == 1:
            files.append({"name": f"toolbar-{n}.msi", "zone": "Yellow", "size": 3000 + n, "type": "MSI",
                          "after": f"{LATE}s", "yara": ["E2E_Adware"]})
            files.append({"name": f"updater-{n}.exe", "zone": "Grey", "size": 3500 + n, "type": "PE32 executable",
                          "after": f"{LATER}s", "yara": ["E2E_Adware"]})
        tasks.append({"id": tid, "name": f"sharded-{n}", "shard": s, "files": files})
    return tasks


def scenario_yaml(tasks):
    lines = ["credentials:", f"  username: {e2e.USERNAME}", f"  password: {PASSWORD}", "tasks:"]
    for t in tasks:
        lines += [f"  - id: {t['id']}", f"    name: {t['name']}", "    files:"]
        lines += [f"      - {json.dumps(f)}" for f in t["files"]]
    return "\n".join(lines) + "\n"


def prometheus_config(ports):
    targets = ", ".join(f"'127.0.0.1:{p}'" for p in ports)
    return f"""\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {e2e.ALERTS}
scrape_configs:
  - job_name: krs-exporter
    static_configs:
      - targets: [{targets}]
"""


def normalise(result):
    """{labels without instance/job: value} of an instant query's result."""
    out = {}
    for s in result:
        labels = tuple(sorted((k, v) for k, v in s["metric"].items() if k not in ("instance", "job")))
        out[labels] = float(s["value"][1])
    return out


def close(a, b):
    """Counter increases are extrapolated slightly differently on the two sides."""
    return abs(a - b) <= max(0.3, 0.05 * max(abs(a), abs(b)))


def dashboard_targets():
    for fname in sorted(os.listdir(e2e.DASHBOARDS)):
        if fname.endswith(".json"):
            with open(os.path.join(e2e.DASHBOARDS, fname), encoding="utf-8") as f:
                dash = json.load(f)
            for panel in [p for top in dash["panels"] for p in [top] + top.get("panels", [])]:
                for target in panel.get("targets", []):
                    yield dash["uid"], panel, target


def compare_dashboards(report, single, sharded):
    variables = {"job": "krs-exporter", "instance": ".+"}
    for uid, panel, target in dashboard_targets():
        key = (uid, panel["title"])
        if key not in EQUAL and key not in SAME_SERIES and key not in YARA:
            continue
        expr = e2e.substitute(target["expr"], variables, panel)
        a, b = normalise(single.query(expr)), normalise(sharded.query(expr))
        name = f"{uid}: panel '{panel['title']}' target {target['refId']}"
        if key in YARA:
            report.check(f"{name}: sharded, {YARA[key]} per series (each shard's file once)",
                         b and all(close(v, YARA[key]) for v in b.values()), f"sharded {sorted(b.items())}")
            continue
        if key in SAME_SERIES:
            report.check(f"{name}: same series sharded as unsharded", a.keys() == b.keys() and a, f"{a} vs {b}")
            continue
        same = a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
        report.check(f"{name}: same answer sharded as unsharded", same and bool(a),
                     f"unsharded {sorted(a.items())} vs sharded {sorted(b.items())}", f"{len(a)} series")


def alerts_by_labels(prom, name):
    return {tuple(sorted((k, v) for k, v in a["labels"].items() if k not in ("instance", "job"))): float(a["value"])
            for a in prom.firing(name)}


def run(args, report, procs):
    tools, missing = e2e.find_tools(args.bin_dir)
    report.require("binaries present", not missing, f"missing: {', '.join(missing)}")
    tmp = procs.tmp
    tasks = make_tasks()
    report.check("the watch list spreads over every shard", {t["shard"] for t in tasks} == set(range(SHARDS)),
                 info=", ".join(f"shard {s}: {sum(t['shard'] == s for t in tasks)} tasks" for s in range(SHARDS)))

    sim_port = e2e.free_port()
    scenario = os.path.join(tmp, "scenario.yml")
    with open(scenario, "w") as f:
        f.write(scenario_yaml(tasks))
    procs.start("simulator", [tools["krs-sandbox-sim"], "--scenario", scenario, "--listen", f"127.0.0.1:{sim_port}"])
    sim_started = time.monotonic()
    report.require("simulator listens", e2e.wait_for(lambda: e2e.port_open(sim_port), 15), procs.log_tail("simulator"))
    password_file = os.path.join(tmp, "password")
    with open(password_file, "w") as f:
        f.write(PASSWORD + "\n")
    config = os.path.join(tmp, "krs-exporter.yml")
    with open(config, "w") as f:
        f.write(e2e.exporter_config(sim_port, password_file, tasks))

    exporters = {"single": (None, e2e.free_port())}
    for name, index in (("shard-0", 0), ("shard-0b", 0), ("shard-1", 1), ("shard-2", 2)):
        exporters[name] = (index, e2e.free_port())
    for name, (index, port) in exporters.items():
        # Each replica keeps its state in a directory of its own, as each pod has its volume.
        argv = [tools["krs-exporter"], "--config.file", config, "--web.listen-address", f"127.0.0.1:{port}",
                f"--storage.path={os.path.join(tmp, 'data-' + name)}"]
        if index is not None:
            argv += [f"--shard.index=krs-exporter-{index}", f"--shard.total={SHARDS}"]
        procs.start(name, argv)
    for name, (_, port) in exporters.items():
        report.require(f"exporter {name} becomes ready",
                       e2e.wait_for(lambda p=port: e2e.http("GET", f"http://127.0.0.1:{p}/-/ready")[0] == 200, 20),
                       procs.log_tail(name))

    proms = {}
    for side, ports in (("single", [exporters["single"][1]]),
                        ("sharded", [p for n, (_, p) in exporters.items() if n != "single"])):
        port = e2e.free_port()
        cfg = os.path.join(tmp, f"prometheus-{side}.yml")
        with open(cfg, "w") as f:
            f.write(prometheus_config(ports))
        procs.start(f"prometheus-{side}", [tools["prometheus"], f"--config.file={cfg}",
                                           f"--storage.tsdb.path={os.path.join(tmp, 'tsdb-' + side)}",
                                           f"--web.listen-address=127.0.0.1:{port}"])
        proms[side] = e2e.Prometheus(port)
    for side, prom in proms.items():
        targets = 1 if side == "single" else len(exporters) - 1
        report.require(f"prometheus ({side}) scrapes its {targets} target(s)", e2e.wait_for(
            lambda p=prom, n=targets: len(p.query('up{job="krs-exporter"} == 1')) == n, 30),
            procs.log_tail(f"prometheus-{side}"))
    single, sharded = proms["single"], proms["sharded"]
    # Otherwise a late file could land in an exporter's baseline, or in a counter's first sample,
    # and the two sides would differ for reasons that have nothing to do with sharding.
    report.require("every exporter and Prometheus was up before the late files appeared",
                   time.monotonic() - sim_started < LATE - 3,
                   f"{time.monotonic() - sim_started:.1f} s after the simulator started")

    # Each shard watches its own tasks; both replicas of shard 0 the same ones.
    owned = sharded.query("krs_task_info")
    by_instance = {}
    for s in owned:
        by_instance.setdefault(s["metric"]["instance"], set()).add(s["metric"]["task_id"])
    expect = {f"127.0.0.1:{p}": {t["id"] for t in tasks if t["shard"] == i} for n, (i, p) in exporters.items() if n != "single"}
    report.check("each replica exports exactly its shard's tasks", by_instance == expect,
                 json.dumps({k: sorted(v) for k, v in by_instance.items()})[:600])

    # Wait for the late files on both sides, then let the counters' samples pile up so that the
    # small extrapolation of increase() matters little.
    want_red = SHARDS
    for side, prom in proms.items():
        report.require(f"the late Red files reach Prometheus ({side})", e2e.wait_for(
            lambda p=prom: len(p.query('count by (task_id, sha256) (krs_download_info{danger_zone="Red"})')) == want_red, 40))
        report.require(f"every file, the second batch included, reaches Prometheus ({side})", e2e.wait_for(
            lambda p=prom: [float(r["value"][1]) for r in p.query("sum(max by (task_id, danger_zone) (krs_task_downloads))")]
            == [float(sum(len(t["files"]) for t in tasks))], 40))
    for side, prom in proms.items():
        report.require(f"KrsRedZoneDownload fires ({side})",
                       e2e.wait_for(lambda p=prom: len(p.firing("KrsRedZoneDownload")) == want_red, 20))
        report.require(f"KrsYaraRuleMatched fires ({side})", e2e.wait_for(
            lambda p=prom: len(p.firing("KrsYaraRuleMatched")) == 2, 20), json.dumps(prom.firing("KrsYaraRuleMatched"))[:400])
    time.sleep(args.settle)

    compare_dashboards(report, single, sharded)
    a, b = alerts_by_labels(single, "KrsRedZoneDownload"), alerts_by_labels(sharded, "KrsRedZoneDownload")
    report.check("KrsRedZoneDownload: the same alerts sharded as unsharded", a.keys() == b.keys(), f"{a} vs {b}",
                 f"{len(a)} alerts")
    a, b = alerts_by_labels(single, "KrsYaraRuleMatched"), alerts_by_labels(sharded, "KrsYaraRuleMatched")
    report.check("KrsYaraRuleMatched: the same alerts (rules) sharded as unsharded", a.keys() == b.keys(), f"{a} vs {b}",
                 f"{len(a)} alerts")
    yara = {dict(k)["rule"]: v for k, v in alerts_by_labels(sharded, "KrsYaraRuleMatched").items()}
    report.check("KrsYaraRuleMatched counts each shard's new file once, whatever its replicas (3 per rule)",
                 all(close(v, SHARDS) for v in yara.values()) and len(yara) == 2, json.dumps(yara))
    rules = {r["name"]: r for g in sharded.api("rules")["groups"] for r in g["rules"]}
    for name in ("KrsShardsMissing", "KrsShardingMismatch"):
        for side, prom in proms.items():
            report.check(f"{name} is quiet ({side}): its expression returns nothing",
                         not prom.query(rules[name]["query"]), json.dumps(prom.query(rules[name]["query"]))[:300])

    # Shard 2 goes away: its tasks are polled by no one.
    for n, proc, _ in procs.procs:
        if n == "shard-2":
            e2e.signal_group(proc, signal.SIGTERM)
            proc.wait(timeout=10)
    missing_now = e2e.wait_for(lambda: sharded.query(rules["KrsShardsMissing"]["query"]), 20)
    report.check("with shard 2 stopped, KrsShardsMissing's expression reports 1 missing shard",
                 missing_now and len(missing_now) == 1 and float(missing_now[0]["value"][1]) == 1
                 and missing_now[0]["metric"].get("job") == "krs-exporter", json.dumps(missing_now)[:300])
    pending = e2e.wait_for(lambda: [a for a in sharded.api("alerts")["alerts"]
                                    if a["labels"]["alertname"] == "KrsShardsMissing" and a["state"] == "pending"], 10)
    report.check("KrsShardsMissing is pending (it fires after 10 minutes)", pending, json.dumps(pending)[:300])
    panel_expr = next(t["expr"] for uid, p, t in dashboard_targets() if p["title"] == "Shards without a replica")
    panel_expr = e2e.substitute(panel_expr, {"job": "krs-exporter", "instance": ".+"}, {})
    report.check("'Shards without a replica' shows 1 sharded, 0 unsharded",
                 [float(s["value"][1]) for s in sharded.query(panel_expr)] == [1.0]
                 and [float(s["value"][1]) for s in single.query(panel_expr)] == [0.0])
    report.check("KrsShardingMismatch stays quiet: the remaining replicas agree",
                 not sharded.query(rules["KrsShardingMismatch"]["query"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin-dir", default=os.path.join(e2e.ROOT, "target", "debug"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (configs and logs)")
    ap.add_argument("--settle", type=float, default=20, help="seconds of samples to gather before comparing")
    args = ap.parse_args()
    args.bin_dir = os.path.abspath(args.bin_dir)
    report = e2e.Report()
    tmp = tempfile.mkdtemp(prefix="krs-e2e-sharded-")
    procs = e2e.Processes(tmp)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    started = time.monotonic()
    try:
        run(args, report, procs)
    except e2e.Abort as e:
        print(f"stopping: '{e}' failed and later checks depend on it", flush=True)
    except Exception as e:  # noqa: BLE001 - an unexpected error is one more failure, reported plainly
        report.fail("unexpected error", f"{type(e).__name__}: {e}")
    finally:
        procs.stop_all()
        if args.keep or report.failed:
            print(f"logs and configs kept in {tmp}", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"e2e-sharded took {time.monotonic() - started:.0f} s", flush=True)
    print(f"{report.passed} passed, {report.failed} failed", flush=True)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
