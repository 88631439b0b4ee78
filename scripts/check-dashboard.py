#!/usr/bin/env python3
"""Every metric a Grafana panel or a Prometheus rule names must be one walletd declares in its code
(a `metrics::counter!`, `gauge!` or `histogram!` with that name; a histogram also as `_bucket`,
`_sum`, `_count`), a recording rule of deploy/prometheus/walletd-rules.yml, or Prometheus's `up`.
A static check, fast and without a server; crates/walletd/tests/prometheus.rs evaluates every expression
against a real Prometheus scraping a walletd that served traffic. Exits 1 naming each unknown metric."""
import json
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
declared = set()
# A histogram has `_bucket` series only when the exporter is given its buckets (telemetry.rs);
# otherwise it is exported as a summary (quantiles, `_sum`, `_count`).
bucketed = set(re.findall(r'Matcher::Full\("([a-z_:][a-z0-9_:]*)"', (root / "crates/walletd/src/telemetry.rs").read_text()))
for path in root.glob("crates/*/src/**/*.rs"):
    for kind, name in re.findall(r'metrics::(counter|gauge|histogram)!\(\s*"([a-z_:][a-z0-9_:]*)"', path.read_text()):
        declared.add(name)
        if kind == "histogram":
            declared.update({name + "_sum", name + "_count"} | ({name + "_bucket"} if name in bucketed else set()))
rules_text = (root / "deploy/prometheus/walletd-rules.yml").read_text()
recorded = set(re.findall(r"record:\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", rules_text))
known = declared | recorded | {"up"}

FUNCTIONS = {"sum", "rate", "increase", "max", "min", "avg", "count", "by", "without", "and", "or", "unless",
             "histogram_quantile", "vector", "on", "ignoring", "group_left", "group_right", "bool", "offset",
             "humanizePercentage", "le", "abs", "clamp_min", "clamp_max"}

def metrics_of(expr):
    expr = re.sub(r'\{[^}]*\}', '', expr)          # label matchers
    expr = re.sub(r'\[[^\]]*\]', '', expr)         # range selectors
    expr = re.sub(r'"[^"]*"', '', expr)            # strings
    expr = re.sub(r'\bby\s*\([^)]*\)', '', expr)   # grouping labels
    names = re.findall(r'[a-zA-Z_:][a-zA-Z0-9_:]*', expr)
    return {n for n in names if n not in FUNCTIONS and not re.fullmatch(r'[0-9.e]+', n)}

exprs = []
dashboard = json.loads((root / "deploy/grafana/walletd.json").read_text())
for panel in dashboard["panels"]:
    for target in panel.get("targets", []):
        exprs.append((f'panel "{panel["title"]}"', target["expr"]))
for m in re.finditer(r"^\s*-\s*(record|alert):\s*(\S+)\s*\n\s*expr:\s*(\|\n(?:\s{10,}.*\n)+|.*)", rules_text, re.M):
    exprs.append((f"rule {m.group(2)}", m.group(3).lstrip("|")))

unknown = [(where, name) for where, expr in exprs for name in sorted(metrics_of(expr)) if name not in known]
for where, name in unknown:
    print(f"check-dashboard: {where} names {name}, which walletd does not export", file=sys.stderr)
print(f"check-dashboard: {len(exprs)} expressions, {len(declared)} metric names declared", file=sys.stderr)
sys.exit(1 if unknown else 0)
