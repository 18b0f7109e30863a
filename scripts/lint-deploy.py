#!/usr/bin/env python3
"""Check the conventions of deploy/ that no off-the-shelf validator knows.

Usage: python3 scripts/lint-deploy.py [--rendered KUSTOMIZE_OUTPUT.yaml]
                                     [--rendered-sharded SHARDED_OUTPUT.yaml] [--promtool PATH]
Needs PyYAML (a dependency of kubernetes-validate, which scripts/validate-deploy.sh installs).
Prints one line per failed check and a summary; exits 1 on any failure.

- Alert rules (deploy/prometheus/alerts.yml): `Krs` + CamelCase names, unique; a `severity` of
  critical or warning; `summary`, `description` and `runbook_url` annotations; every runbook_url
  on one base and pointing at a `## <AlertName>` heading of docs/runbook.md.
- Compose (deploy/docker-compose.yml): every bind-mounted path, secret file and build context
  exists; the exporter's compose configuration watches every task of config/demo-scenario.yml.
- Kubernetes (with --rendered, the output of `kubectl kustomize deploy/kubernetes`): the expected
  kinds; the Deployment's probes (/-/healthy, /-/ready) and hardened securityContext; its
  `--storage.path` on a writable volume mount, since the root filesystem is read-only (an
  emptyDir with a sizeLimit, or a claim with `strategy: Recreate` and one replica); the
  dashboards ConfigMap labelled grafana_dashboard "1" holding every dashboard; the
  PrometheusRule's spec equal to alerts.yml, and (with promtool) valid as a rule file; the
  ServiceMonitor selecting exactly the krs-exporter Service, which selects the pods.
- Sharded Kubernetes (with --rendered-sharded, `kubectl kustomize deploy/kubernetes/sharded`):
  the same, for a StatefulSet in place of the Deployment, plus: its headless governing Service;
  `--shard.index=$(POD_NAME)` with POD_NAME from the downward API; `replicas` equal to
  `--shard.total`; `--storage.path` on a ReadWriteOnce volumeClaimTemplate, one claim per pod;
  and (with --rendered too) a pod spec identical to the Deployment's but for the shard flags,
  POD_NAME and the storage volume (a claim template in place of the Deployment's volume).
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:
    sys.exit("lint-deploy: PyYAML is missing (python3 -m pip install pyyaml)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALERTS = os.path.join(ROOT, "deploy", "prometheus", "alerts.yml")
RUNBOOK = os.path.join(ROOT, "docs", "runbook.md")
COMPOSE = os.path.join(ROOT, "deploy", "docker-compose.yml")
COMPOSE_CONFIG = os.path.join(ROOT, "deploy", "compose", "krs-exporter.yml")
DEMO_SCENARIO = os.path.join(ROOT, "config", "demo-scenario.yml")
DASHBOARDS = os.path.join(ROOT, "grafana", "dashboards")
RUNBOOK_BASE = "https://github.com/krs-exporter/krs-exporter/blob/main/docs/runbook.md#"


class Checks:
    def __init__(self):
        self.count = 0
        self.failures = []

    def __call__(self, ok, what):
        self.count += 1
        if not ok:
            self.failures.append(what)
        return ok


def github_anchor(heading):
    """The id GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def lint_alerts(check):
    with open(RUNBOOK, encoding="utf-8") as f:
        anchors = {github_anchor(m.group(1)) for m in re.finditer(r"^##\s+(.+)$", f.read(), re.M)}
    rules = [r for g in load(ALERTS)["groups"] for r in g["rules"] if "alert" in r]
    check(rules, "alerts.yml has no alerting rules")
    names = [r["alert"] for r in rules]
    check(len(names) == len(set(names)), f"duplicate alert names in alerts.yml: {names}")
    for r in rules:
        name = r["alert"]
        ann = r.get("annotations", {})
        check(re.fullmatch(r"Krs(?:[A-Z][a-z0-9]*)+", name), f"{name}: not `Krs` + CamelCase")
        check(r.get("labels", {}).get("severity") in ("critical", "warning"), f"{name}: severity must be critical or warning")
        for key in ("summary", "description", "runbook_url"):
            check(ann.get(key), f"{name}: no {key} annotation")
        url = ann.get("runbook_url", "")
        check(url.startswith(RUNBOOK_BASE), f"{name}: runbook_url {url!r} does not start with {RUNBOOK_BASE}")
        anchor = url.rpartition("#")[2]
        check(anchor == github_anchor(name), f"{name}: runbook anchor #{anchor} should be #{github_anchor(name)}")
        check(anchor in anchors, f"{name}: docs/runbook.md has no heading for #{anchor}")


def lint_compose(check):
    compose = load(COMPOSE)
    base = os.path.dirname(COMPOSE)
    for name, svc in compose["services"].items():
        build = svc.get("build")
        if build:
            ctx = os.path.join(base, build.get("context", "."))
            check(os.path.isdir(ctx), f"compose {name}: build context {ctx} missing")
            check(os.path.isfile(os.path.join(ctx, build.get("dockerfile", "Dockerfile"))), f"compose {name}: dockerfile missing")
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if source.startswith((".", "/")):
                check(os.path.exists(os.path.join(base, source)), f"compose {name}: volume source {source} missing")
    for name, secret in compose.get("secrets", {}).items():
        check(os.path.isfile(os.path.join(base, secret["file"])), f"compose secret {name}: {secret['file']} missing")
    if os.path.exists(DEMO_SCENARIO):
        scenario = {t["id"].lower() for t in load(DEMO_SCENARIO)["tasks"]}
        watched = {str(t["id"] if isinstance(t, dict) else t).lower() for t in load(COMPOSE_CONFIG)["tasks"]}
        check(scenario <= watched, f"deploy/compose/krs-exporter.yml does not watch demo tasks {sorted(scenario - watched)}")
    else:
        print("lint-deploy: config/demo-scenario.yml absent: compose watch list not compared with it")


SHARD_INDEX_ARG = "--shard.index=$(POD_NAME)"
STORAGE_PATH_ARG = "--storage.path="


def load_rendered(rendered):
    docs = [d for d in yaml.safe_load_all(open(rendered, encoding="utf-8")) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    return docs, by_kind


def selects(selector, labels):
    """Whether a matchLabels-style selector matches these labels."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def storage_volume(check, kind, workload):
    """The volume holding the exporter's --storage.path: a writable mount (the root filesystem is
    read-only), from a volumeClaimTemplate, an emptyDir with a sizeLimit or a claim that only
    one pod at a time can hold. Returns the volume's name, None when there is none."""
    spec = workload["spec"]
    pod = spec["template"]["spec"]
    exporter = [c for c in pod["containers"] if c["name"] == "krs-exporter"]
    if not exporter:
        return None
    paths = [a[len(STORAGE_PATH_ARG):] for a in exporter[0].get("args", []) if a.startswith(STORAGE_PATH_ARG)]
    if not check(len(paths) == 1 and paths[0].startswith("/"),
                 f"{kind}: want one {STORAGE_PATH_ARG}<absolute path> (the state store; empty keeps it in memory only), got {paths}"):
        return None
    path = paths[0].rstrip("/") or "/"
    mounts = [m for m in exporter[0].get("volumeMounts", []) if m.get("mountPath", "").rstrip("/") == path]
    if not check(len(mounts) == 1, f"{kind}: no volume mounted at --storage.path {path}: the read-only root filesystem would refuse every write"):
        return None
    mount = mounts[0]
    check(not mount.get("readOnly") and not mount.get("subPath"),
          f"{kind}: the volume at --storage.path {path} is mounted readOnly or with a subPath; mount the whole volume writable")
    name = mount["name"]
    claims = {t["metadata"]["name"]: t for t in spec.get("volumeClaimTemplates", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    if name in claims:
        check(claims[name]["spec"].get("accessModes") == ["ReadWriteOnce"],
              f"{kind}: volumeClaimTemplate {name} must be ReadWriteOnce (two pods must never share a store)")
        check(claims[name]["spec"].get("resources", {}).get("requests", {}).get("storage"),
              f"{kind}: volumeClaimTemplate {name} requests no storage size")
    elif "emptyDir" in volumes.get(name, {}):
        check((volumes[name]["emptyDir"] or {}).get("sizeLimit"), f"{kind}: emptyDir {name} of the state store has no sizeLimit")
    elif "persistentVolumeClaim" in volumes.get(name, {}):
        check(workload["kind"] == "Deployment" and spec.get("replicas", 1) == 1
              and spec.get("strategy", {}).get("type") == "Recreate",
              f"{kind}: a claim for the state store needs one replica and strategy Recreate: two pods must never share the directory")
    else:
        check(False, f"{kind}: the state store's volume {name} is none of a volumeClaimTemplate, an emptyDir, a persistentVolumeClaim")
    return name


def lint_workload(check, kind, workload):
    """Probes and hardening of a Deployment's or StatefulSet's pod, the state store's volume, and a
    Service-able pod label."""
    pod = workload["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True, f"{kind}: runAsNonRoot")
    check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{kind}: seccompProfile RuntimeDefault")
    check(pod.get("automountServiceAccountToken") is False, f"{kind}: automountServiceAccountToken false")
    for c in pod["containers"]:
        sc = c.get("securityContext", {})
        check(sc.get("readOnlyRootFilesystem") is True, f"{kind} container {c['name']}: readOnlyRootFilesystem")
        check(sc.get("allowPrivilegeEscalation") is False, f"{kind} container {c['name']}: allowPrivilegeEscalation false")
        check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{kind} container {c['name']}: drop ALL capabilities")
        check(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/-/healthy", f"{kind} container {c['name']}: liveness /-/healthy")
        check(c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/-/ready", f"{kind} container {c['name']}: readiness /-/ready")
    check(selects(workload["spec"]["selector"].get("matchLabels"), workload["spec"]["template"]["metadata"].get("labels", {})),
          f"{kind}: selector does not match the pod template's labels")
    storage_volume(check, kind, workload)


def lint_shared(check, by_kind, promtool, variant):
    """What both variants get from deploy/kubernetes/common."""
    dash_cms = [d for d in by_kind.get("ConfigMap", []) if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    check(len(dash_cms) == 1, f"{variant}: one ConfigMap labelled grafana_dashboard: \"1\"")
    for cm in dash_cms:
        for path in glob.glob(os.path.join(DASHBOARDS, "*.json")):
            key = os.path.basename(path)
            with open(path, encoding="utf-8") as f:
                check(cm.get("data", {}).get(key) is not None and json.loads(cm["data"][key]) == json.load(f),
                      f"{variant}: dashboards ConfigMap lacks or differs on {key}")
    for rule in by_kind.get("PrometheusRule", []):
        check(rule["spec"] == load(ALERTS), f"{variant}: PrometheusRule spec differs from deploy/prometheus/alerts.yml")
        if promtool:
            with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
                yaml.safe_dump(rule["spec"], f)
            out = subprocess.run([promtool, "check", "rules", f.name], capture_output=True, text=True)
            os.unlink(f.name)
            check(out.returncode == 0, f"{variant}: PrometheusRule spec fails promtool check rules: {out.stdout}{out.stderr}")
    services = by_kind.get("Service", [])
    for sm in by_kind.get("ServiceMonitor", []):
        ports = {p.get("name") for s in services for p in s["spec"].get("ports", [])}
        for ep in sm["spec"].get("endpoints", []):
            check(ep.get("port") in ports, f"{variant}: ServiceMonitor endpoint port {ep.get('port')} is not a Service port {ports}")
        selected = [s for s in services if selects(sm["spec"].get("selector", {}).get("matchLabels"), s["metadata"].get("labels", {}))]
        # One Service, so one scrape job (named after it): a second matching Service would scrape
        # every pod twice under another job name.
        check([s["metadata"]["name"] for s in selected] == ["krs-exporter"],
              f"{variant}: ServiceMonitor selects Services {[s['metadata']['name'] for s in selected]}, want exactly krs-exporter (the job name alerts.yml expects)")
    for workload in by_kind.get("Deployment", []) + by_kind.get("StatefulSet", []):
        pod_labels = workload["spec"]["template"]["metadata"].get("labels", {})
        check(any(selects(s["spec"].get("selector"), pod_labels) for s in services),
              f"{variant}: no Service selects the {workload['kind']}'s pods")


def lint_rendered(check, rendered, promtool):
    """`kubectl kustomize deploy/kubernetes`: one Deployment."""
    docs, by_kind = load_rendered(rendered)
    kinds = sorted(d["kind"] for d in docs)
    check(kinds == sorted(["ConfigMap", "ConfigMap", "Deployment", "PrometheusRule", "Secret", "Service", "ServiceMonitor"]),
          f"kustomize output kinds {kinds}")
    for dep in by_kind.get("Deployment", []):
        lint_workload(check, "Deployment", dep)
    lint_shared(check, by_kind, promtool, "deploy/kubernetes")


def shard_args(container):
    """(--shard.index value, --shard.total value) of a container's args, None where absent."""
    index = total = None
    for arg in container.get("args", []):
        if arg.startswith("--shard.index="):
            index = arg.partition("=")[2]
        elif arg.startswith("--shard.total="):
            total = arg.partition("=")[2]
    return index, total


def without_shard_flags(pod_spec, volumes=()):
    """A pod spec with the sharding flags, the POD_NAME variable and these volumes taken out."""
    pod = json.loads(json.dumps(pod_spec))
    if "volumes" in pod:
        pod["volumes"] = [v for v in pod["volumes"] if v["name"] not in volumes]
    for c in pod.get("containers", []):
        c["args"] = [a for a in c.get("args", []) if not a.startswith(("--shard.index=", "--shard.total="))]
        c["env"] = [e for e in c.get("env", []) if e.get("name") != "POD_NAME"]
        if not c["env"]:
            del c["env"]
    return pod


def lint_rendered_sharded(check, rendered, promtool, deployment_render):
    """`kubectl kustomize deploy/kubernetes/sharded`: a StatefulSet of shards in place of the
    Deployment, the rest shared."""
    docs, by_kind = load_rendered(rendered)
    kinds = sorted(d["kind"] for d in docs)
    check(kinds == sorted(["ConfigMap", "ConfigMap", "StatefulSet", "PrometheusRule", "Secret", "Service", "ServiceMonitor"]),
          f"sharded kustomize output kinds {kinds}")
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    for sts in by_kind.get("StatefulSet", []):
        lint_workload(check, "StatefulSet", sts)
        spec = sts["spec"]
        name = sts["metadata"]["name"]
        governing = services.get(spec.get("serviceName"))
        check(governing is not None, f"StatefulSet serviceName {spec.get('serviceName')!r} is not a Service of the variant")
        if governing:
            check(governing["spec"].get("clusterIP") == "None", f"StatefulSet's Service {governing['metadata']['name']} is not headless (clusterIP: None)")
            check(selects(governing["spec"].get("selector"), spec["template"]["metadata"].get("labels", {})),
                  "StatefulSet's Service does not select its pods")
        claims = [t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])]
        check(len(claims) == 1, f"StatefulSet: want one volumeClaimTemplate, the state store, got {claims}")
        containers = spec["template"]["spec"]["containers"]
        exporter = [c for c in containers if c["name"] == "krs-exporter"]
        check(len(exporter) == 1, "StatefulSet: one container named krs-exporter")
        for c in exporter:
            index, total = shard_args(c)
            check(index == "$(POD_NAME)", f"StatefulSet: want {SHARD_INDEX_ARG} (the shard is the pod's ordinal), got --shard.index={index}")
            env = {e["name"]: e for e in c.get("env", [])}
            check(env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
                  "StatefulSet: POD_NAME must come from the downward API (fieldRef metadata.name)")
            replicas = spec.get("replicas", 1)
            check(total is not None and total.isdigit() and int(total) == replicas,
                  f"StatefulSet: replicas {replicas} != --shard.total={total}: every shard needs exactly one pod "
                  "(fewer leave tasks unpolled, more cannot start)")
            check(replicas >= 2, f"StatefulSet: {replicas} replica(s): the sharded variant is for 2 or more shards")
            # The pod's ordinal must end the pod name for --shard.index to parse it: krs-exporter-N.
            check(name.rsplit("-", 1)[-1] and not name.rsplit("-", 1)[-1].isdigit(),
                  f"StatefulSet name {name!r} ends in a number: its pods' names would not end in just the ordinal")
        if deployment_render:
            _, base = load_rendered(deployment_render)
            for dep in base.get("Deployment", []):
                # The storage volume is the one allowed difference of the volumes: the StatefulSet's
                # comes from its claim template, the Deployment's is in its pod spec.
                check(without_shard_flags(spec["template"]["spec"]) == without_shard_flags(dep["spec"]["template"]["spec"], claims),
                      "StatefulSet's pod spec differs from the Deployment's beyond the shard flags, POD_NAME and the "
                      "storage volume's source (same image, config, probes, resources, mounts and hardening expected)")
                check(spec["template"]["metadata"].get("labels") == dep["spec"]["template"]["metadata"].get("labels"),
                      "StatefulSet's pod labels differ from the Deployment's (the Service, ServiceMonitor and dashboards rely on them)")
    lint_shared(check, by_kind, promtool, "deploy/kubernetes/sharded")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rendered", help="output of `kubectl kustomize deploy/kubernetes`")
    ap.add_argument("--rendered-sharded", help="output of `kubectl kustomize deploy/kubernetes/sharded`")
    ap.add_argument("--promtool", default=shutil.which("promtool"))
    args = ap.parse_args()
    check = Checks()
    lint_alerts(check)
    lint_compose(check)
    if args.rendered:
        lint_rendered(check, args.rendered, args.promtool)
    if args.rendered_sharded:
        lint_rendered_sharded(check, args.rendered_sharded, args.promtool, args.rendered)
    for failure in check.failures:
        print(f"FAIL {failure}")
    print(f"lint-deploy: {check.count} checks, {len(check.failures)} failures")
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
