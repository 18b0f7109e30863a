#!/usr/bin/env python3
"""Check README.md and docs/*.md: their PromQL parses and their links resolve in the repository.

Usage: python3 scripts/lint-docs.py [--promtool PATH]
Standard library only. Prints one line per problem and a summary; exits 1 on any problem.

- PromQL: every fenced ```promql block (at any indentation, so inside list items too) holds
  expressions separated by blank lines; `#` comment lines are dropped. Every inline code span
  that calls a function or aggregation on a krs_ metric (`sum(rate(krs_polls_total[5m]))`) or
  compares one (`krs_api_up == 0`) is an expression too. Each must parse: promtool 2.42 has no
  offline parse command, so each becomes a recording rule of its own file for
  `promtool check rules`.
- Links: every relative Markdown link target (`[text](path)`, `[text](path#anchor)`) names a
  file or directory inside the repository, and an anchor into a Markdown file names one of its
  headings (GitHub's slugs). An inline code span that is a relative path of a file
  (`deploy/prometheus/alerts.yml`) or a directory (`grafana/dashboards/`) names one that exists,
  from the repository root or from the document's directory.
"""

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FENCE = re.compile(r"^([ \t]*(?:\d+\.|[-*])?[ \t]*)```promql[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.S | re.M)
ANY_FENCE = re.compile(r"^[ \t]*(?:\d+\.|[-*])?[ \t]*```.*?^[ \t]*```[ \t]*$", re.S | re.M)
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
# A call on a krs_ metric, or a comparison of one: PromQL rather than a metric name or a sample.
INLINE_PROMQL = re.compile(
    r"^[a-z_]+\s*(by|without)?\s*(\([^)]*\))?\s*\(.*krs_|^krs_[a-z0-9_]+(\{[^}]*\})?\s*(==|!=|>=|<=|>|<)\s"
)
PATH = re.compile(r"^[\w.-]+(/[\w.-]+)*(\.(md|ya?ml|rs|sh|py|json|toml)|/)$")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def documents():
    return [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def line_of(text, offset):
    return text.count("\n", 0, offset) + 1


def promql_snippets(path, text):
    """(line, expression) for every PromQL snippet of one document."""
    snippets = []
    for m in FENCE.finditer(text):
        start = line_of(text, m.start(2))
        expr, expr_line = [], None
        for i, raw in enumerate(m.group(2).split("\n") + [""]):
            line = raw.strip()
            if line.startswith("#"):
                continue
            if line:
                expr_line = expr_line or start + i
                expr.append(raw)
            elif expr:
                snippets.append((expr_line, "\n".join(expr)))
                expr, expr_line = [], None
    outside = ANY_FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for m in INLINE.finditer(outside):
        if INLINE_PROMQL.search(m.group(1).strip()):
            snippets.append((line_of(outside, m.start()), m.group(1).strip()))
    return snippets


def parse_error(promtool, expr, tmp):
    rules = os.path.join(tmp, "snippet.yml")
    with open(rules, "w", encoding="utf-8") as f:
        f.write("groups:\n  - name: docs\n    rules:\n      - record: docs_snippet\n        expr: |\n")
        for line in expr.split("\n"):
            f.write("          " + line + "\n")
    run = subprocess.run([promtool, "check", "rules", rules], capture_output=True, text=True)
    if run.returncode == 0:
        return None
    lines = (run.stderr + run.stdout).strip().splitlines()
    return next((l.strip() for l in lines if "parse" in l), lines[-1] if lines else "promtool failed")


def slug(heading):
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*|_(?=\W)|(?<=\W)_", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    with open(path, encoding="utf-8") as f:
        text = ANY_FENCE.sub("", f.read())
    seen, out = {}, set()
    for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def link_problems(path, text):
    problems = []
    outside = ANY_FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    outside = INLINE.sub(lambda m: " " * len(m.group(0)), outside)
    for m in LINK.finditer(outside):
        target = m.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
            continue  # a URL (https:, mailto:)
        where = f"{os.path.relpath(path, ROOT)}:{line_of(outside, m.start())}"
        file_part, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        if not (resolved == ROOT or resolved.startswith(ROOT + os.sep)):
            problems.append(f"{where}: link {target!r} points outside the repository")
        elif not os.path.exists(resolved):
            problems.append(f"{where}: link {target!r}: no such file in the repository")
        elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
            problems.append(f"{where}: link {target!r}: no heading with that anchor")
    return problems


def reference_problems(path, text):
    problems = []
    outside = ANY_FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for m in INLINE.finditer(outside):
        ref = m.group(1)
        if "/" not in ref or not PATH.match(ref):
            continue
        if not any(os.path.exists(os.path.join(base, ref)) for base in (ROOT, os.path.dirname(path))):
            where = f"{os.path.relpath(path, ROOT)}:{line_of(outside, m.start())}"
            problems.append(f"{where}: `{ref}` names no file or directory of the repository")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--promtool", default=shutil.which("promtool"))
    args = parser.parse_args()
    if not args.promtool:
        print("promtool not found (PATH or --promtool)")
        return 1
    problems, expressions = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for path in documents():
            with open(path, encoding="utf-8") as f:
                text = f.read()
            rel = os.path.relpath(path, ROOT)
            for line, expr in promql_snippets(path, text):
                expressions += 1
                error = parse_error(args.promtool, expr, tmp)
                if error:
                    problems.append(f"{rel}:{line}: PromQL does not parse: {error}\n    {expr}")
            problems += link_problems(path, text)
            problems += reference_problems(path, text)
    for p in problems:
        print(p)
    print(f"{len(documents())} documents, {expressions} PromQL expressions, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
