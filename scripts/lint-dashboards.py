#!/usr/bin/env python3
"""Lint the Grafana dashboards against the conventions of grafana/dashboard-linter, plus ours.

Usage: python3 scripts/lint-dashboards.py [--promtool PATH] [DASHBOARD.json ...]
(default: every grafana/dashboards/*.json). Standard library only. Exit status 1 on any problem.

Checked per dashboard: a stable `uid` equal to the file name, a title, the tags
krs/kaspersky/sandbox, schemaVersion 39, links that point at the other dashboards of the set;
template variables `datasource` (type datasource, prometheus), `job` and `instance` (query
variables on $datasource, label_values over krs_exporter_build_info, multi-select with All =
`.+`, refreshed on time-range change; `instance` filtered by `$job`).
Per panel: a title unique in the dashboard, a description, the templated datasource, at least one target, a valid unit in
fieldConfig.defaults.unit (and in unit overrides). Per target: the templated datasource, every
selector carrying job=~"$job" and instance=~"$instance", every rate/irate/increase over
[$__rate_interval], every `_total` counter inside rate/irate/increase. With promtool available
(PATH or --promtool), every expression, its template variables substituted, must also parse.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED_TAGS = {"krs", "kaspersky", "sandbox"}
SCHEMA_VERSION = 39
TEMPLATED_DS = {"$datasource", "${datasource}"}
# Units Grafana knows (a subset of its value formats: the ones a dashboard of this kind may use).
VALID_UNITS = {
    "none", "short", "string", "percent", "percentunit", "locale", "sci", "hex", "hex0x",
    "bytes", "decbytes", "bits", "decbits", "kbytes", "mbytes", "gbytes",
    "Bps", "binBps", "bps", "binbps", "pps",
    "ns", "µs", "ms", "s", "m", "h", "d", "dtdurationms", "dtdurations", "dthms", "dtdhms", "clockms", "clocks",
    "hertz", "cps", "ops", "reqps", "rps", "wps", "iops", "cpm", "opm", "rpm", "wpm",
    "dateTimeAsIso", "dateTimeAsIsoNoDateIfToday", "dateTimeAsUS", "dateTimeAsLocal",
    "dateTimeAsLocalNoDateIfToday", "dateTimeAsSystem", "dateTimeFromNow",
    "bool", "bool_yes_no", "bool_on_off",
}
# Substitutions Grafana would make, for parsing the expressions with promtool.
SUBSTITUTIONS = {
    "$__rate_interval": "1m", "${__rate_interval}": "1m", "$__interval": "30s", "${__interval}": "30s",
    "$__range": "1h", "${__range}": "1h", "$__range_s": "3600", "$__interval_ms": "30000",
    "$job": ".+", "${job}": ".+", "$instance": ".+", "${instance}": ".+",
}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2"}
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
RANGE_FUNCTIONS = {"rate", "irate", "increase"}
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
                "topk", "quantile"}

TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<number>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:[smhdwy]|ms)?(?:\d+(?:ms|[smhdwy]))*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<var>\$\{?[A-Za-z_][A-Za-z0-9_]*\}?)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],:@])
""", re.VERBOSE)


def tokenize(expr):
    tokens, pos = [], 0
    while pos < len(expr):
        m = TOKEN_RE.match(expr, pos)
        if not m:
            raise ValueError(f"cannot tokenize at {expr[pos:pos + 20]!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            tokens.append((m.lastgroup, m.group()))
    return tokens


def matching(tokens, i, open_tok, close_tok):
    """Index of the token closing the bracket opened at tokens[i]."""
    depth = 0
    for j in range(i, len(tokens)):
        if tokens[j][1] == open_tok:
            depth += 1
        elif tokens[j][1] == close_tok:
            depth -= 1
            if depth == 0:
                return j
    raise ValueError(f"unbalanced {open_tok!r}")


def inspect_expr(expr):
    """Problems with one PromQL expression: selectors without job/instance matchers, rate/increase
    not over $__rate_interval, counters outside rate/increase."""
    problems = []
    tokens = tokenize(expr)
    i = 0
    stack = []  # function names of the open parentheses
    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) else None
        if kind == "ident" and text in LABEL_LIST_KEYWORDS and nxt == "(":
            i = matching(tokens, i + 1, "(", ")") + 1
            continue
        if kind == "ident" and text in KEYWORDS:
            i += 1
            continue
        if kind == "ident" and text in AGGREGATIONS and nxt in ("by", "without"):
            # `sum by (labels) (expr)`: skip the label list, then the call opens.
            i = matching(tokens, i + 2, "(", ")") + 1
            stack.append(text)
            i += 1
            continue
        if kind == "ident" and nxt == "(":
            stack.append(text)
            if text in RANGE_FUNCTIONS:
                close = matching(tokens, i + 1, "(", ")")
                inner = [t for _, t in tokens[i + 2:close]]
                if "[" not in inner:
                    problems.append(f"{text}() without a range")
                else:
                    rng = inner[inner.index("[") + 1:inner.index("]")]
                    if rng not in (["$__rate_interval"], ["${__rate_interval}"]):
                        problems.append(f"{text}() over [{''.join(rng)}], not [$__rate_interval]")
            i += 2
            continue
        if text == "(":
            stack.append("")
        elif text == ")":
            stack.pop()
        elif text == "[":
            i = matching(tokens, i, "[", "]") + 1
            continue
        elif kind == "ident" or text == "{":
            name = text if kind == "ident" else ""
            matchers = ""
            end = i + 1
            if text == "{":
                end = matching(tokens, i, "{", "}") + 1
                matchers = "".join(t for _, t in tokens[i + 1:end - 1])
            elif nxt == "{":
                end = matching(tokens, i + 1, "{", "}") + 1
                matchers = "".join(t for _, t in tokens[i + 2:end - 1])
            for label in ("job", "instance"):
                if f'{label}=~"${label}"' not in matchers:
                    problems.append(f"selector {name}{{{matchers}}} lacks {label}=~\"${label}\"")
            if name.endswith("_total"):
                in_range_fn = bool(stack) and stack[-1] in RANGE_FUNCTIONS and end < len(tokens) and tokens[end][1] == "["
                if not in_range_fn:
                    problems.append(f"counter {name} is not inside rate/irate/increase")
            i = end
            continue
        i += 1
    return problems


def substitute(expr):
    for var in sorted(SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(var, SUBSTITUTIONS[var])
    return expr


def label_values_selector(query):
    """The series selector inside label_values(SELECTOR, label)."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", query, re.S)
    return (m.group(1), m.group(2)) if m else (None, None)


def all_panels(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep their panels inside


def var_query(var):
    q = var.get("query")
    return q.get("query", "") if isinstance(q, dict) else (q or "")


class Linter:
    def __init__(self):
        self.checks = 0
        self.failures = []
        self.expressions = []  # (where, expr) to parse with promtool

    def check(self, ok, where, what):
        self.checks += 1
        if not ok:
            self.failures.append(f"{where}: {what}")

    def lint(self, path, uids):
        name = os.path.basename(path)
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        stem = os.path.splitext(name)[0]
        self.check(d.get("uid") == stem, name, f"uid {d.get('uid')!r} should be the file name {stem!r}")
        self.check(bool(d.get("title")), name, "no title")
        self.check(REQUIRED_TAGS <= set(d.get("tags", [])), name, f"tags {d.get('tags')} lack {sorted(REQUIRED_TAGS)}")
        self.check(d.get("schemaVersion") == SCHEMA_VERSION, name, f"schemaVersion {d.get('schemaVersion')} != {SCHEMA_VERSION}")
        linked = {m.group(1) for link in d.get("links", []) for m in [re.match(r"/d/([^/?]+)", link.get("url", ""))] if m}
        others = uids - {stem}
        self.check(others <= linked, name, f"no dashboard link to {sorted(others - linked)}")
        self.check(linked <= uids, name, f"links to unknown dashboards {sorted(linked - uids)}")
        self.lint_variables(name, d)
        ids = [p.get("id") for p in all_panels(d)]
        self.check(len(ids) == len(set(ids)), name, "duplicate panel ids")
        titles = [p.get("title") for p in all_panels(d) if p.get("type") != "row"]
        self.check(len(titles) == len(set(titles)), name,
                   f"duplicate panel titles {sorted({t for t in titles if titles.count(t) > 1})} (scripts/e2e.py names panels by title)")
        for panel in all_panels(d):
            if panel.get("type") != "row":
                self.lint_panel(name, panel)

    def lint_variables(self, name, d):
        variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
        ds = variables.get("datasource", {})
        self.check(ds.get("type") == "datasource" and ds.get("query") == "prometheus", name,
                   "no `datasource` variable of type datasource with query prometheus")
        self.check(ds.get("label") == "Data source", name, "datasource variable should be labelled 'Data source'")
        for var_name, label in (("job", "Job"), ("instance", "Instance")):
            v = variables.get(var_name)
            where = f"{name}: variable {var_name}"
            if v is None:
                self.check(False, name, f"no `{var_name}` variable")
                continue
            self.check(v.get("type") == "query", where, "should be a query variable")
            self.check((v.get("datasource") or {}).get("uid") in TEMPLATED_DS, where, "should use $datasource")
            self.check(v.get("label") == label, where, f"should be labelled {label!r}")
            self.check(v.get("multi") is True and v.get("includeAll") is True and v.get("allValue") == ".+", where,
                       "should be multi-select with All = '.+'")
            self.check(v.get("refresh") == 2, where, "should refresh on time-range change (refresh: 2)")
            selector, label_name = label_values_selector(var_query(v))
            self.check(label_name == var_name and selector is not None and selector.startswith("krs_exporter_build_info"),
                       where, f"query {var_query(v)!r} should be label_values(krs_exporter_build_info..., {var_name})")
            if var_name == "instance":
                self.check(selector is not None and '$job' in selector, where, "should be filtered by $job")
            if selector:
                self.expressions.append((where, selector))

    def lint_panel(self, name, panel):
        where = f"{name}: panel {panel.get('title')!r}"
        self.check(bool(panel.get("title")), where, "no title")
        self.check(bool(panel.get("description")), where, "no description")
        self.check((panel.get("datasource") or {}).get("uid") in TEMPLATED_DS, where, "does not use $datasource")
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        self.check(defaults.get("unit") in VALID_UNITS, where, f"unit {defaults.get('unit')!r} missing or unknown")
        for override in panel.get("fieldConfig", {}).get("overrides", []):
            for prop in override.get("properties", []):
                if prop.get("id") == "unit":
                    self.check(prop.get("value") in VALID_UNITS, where, f"override unit {prop.get('value')!r} unknown")
        targets = panel.get("targets", [])
        self.check(bool(targets), where, "no targets")
        for t in targets:
            twhere = f"{where} target {t.get('refId')}"
            if "datasource" in t:
                self.check((t.get("datasource") or {}).get("uid") in TEMPLATED_DS, twhere, "does not use $datasource")
            expr = t.get("expr", "")
            self.check(bool(expr.strip()), twhere, "empty expression")
            try:
                problems = inspect_expr(expr)
            except (ValueError, IndexError) as e:
                problems = [f"cannot analyse ({e or 'unbalanced brackets'})"]
            self.checks += 1
            for p in problems:
                self.failures.append(f"{twhere}: {p} in {expr}")
            self.expressions.append((twhere, expr))

    def parse_with_promtool(self, promtool):
        """Every expression, variables substituted, as a recording rule: promtool parses them all
        in one run; only when that fails, one run per expression says which."""
        self.checks += len(self.expressions)
        if promtool_parses(promtool, [expr for _, expr in self.expressions]):
            return
        for where, expr in self.expressions:
            if not promtool_parses(promtool, [expr]):
                self.failures.append(f"{where}: promtool cannot parse {substitute(expr)}")


def promtool_parses(promtool, exprs):
    with tempfile.TemporaryDirectory() as tmp:
        rules = os.path.join(tmp, "dashboards.rules.yml")
        with open(rules, "w", encoding="utf-8") as f:
            f.write("groups:\n  - name: dashboards\n    rules:\n")
            for n, expr in enumerate(exprs):
                f.write(f"      - record: dashboard:expr{n}\n        expr: {json.dumps(substitute(expr))}\n")
        return subprocess.run([promtool, "check", "rules", rules], capture_output=True).returncode == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dashboards", nargs="*")
    ap.add_argument("--promtool", default=shutil.which("promtool"), help="promtool binary (default: from PATH)")
    args = ap.parse_args()
    paths = args.dashboards or sorted(glob.glob(os.path.join(ROOT, "grafana", "dashboards", "*.json")))
    if not paths:
        print("lint-dashboards: no dashboards found", file=sys.stderr)
        return 1
    uids = {os.path.splitext(os.path.basename(p))[0] for p in paths}
    linter = Linter()
    for p in paths:
        linter.lint(p, uids)
    parsed = "not parsed (no promtool)"
    if args.promtool:
        linter.parse_with_promtool(args.promtool)
        parsed = f"parsed by {args.promtool}"
    for failure in linter.failures:
        print(f"FAIL {failure}")
    print(f"lint-dashboards: {len(paths)} dashboards, {len(linter.expressions)} expressions ({parsed}), "
          f"{linter.checks} checks, {len(linter.failures)} failures")
    return 1 if linter.failures else 0


if __name__ == "__main__":
    sys.exit(main())
