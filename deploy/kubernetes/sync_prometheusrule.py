#!/usr/bin/env python3
"""Regenerate prometheusrule.yaml from deploy/prometheus/retention-rules.yaml.

The rule groups are copied as text (comments included) under `spec:` so that the
PrometheusRule and the plain rules file stay identical; tests/unit/test_deploy_rules.py
fails while they differ.

    python3 deploy/kubernetes/sync_prometheusrule.py          # rewrite
    python3 deploy/kubernetes/sync_prometheusrule.py --check  # exit 1 if out of date
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RULES = HERE.parent / "prometheus" / "retention-rules.yaml"
TARGET = HERE / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/retention-rules.yaml by
# deploy/kubernetes/sync_prometheusrule.py -- edit that file and rerun the script.
#
# With kube-prometheus-stack, the operator only loads PrometheusRules whose labels
# match its ruleSelector (often `release: <helm release name>`): add that label here
# if needed.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: retention
  labels:
    app.kubernetes.io/name: retention
    app.kubernetes.io/component: agent
spec:
"""


def render() -> str:
    lines = RULES.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    body = [("  " + line) if line.strip() else "" for line in lines[start:]]
    return HEADER + "\n".join(body) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
