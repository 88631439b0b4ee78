"""Turns the raw outputs of scripts/bench.sh (one directory) into the Markdown table of figures,
baselines and ratios that docs/performance.md quotes. Usage: python3 scripts/bench/table.py DIR"""

import json
import os
import platform
import re
import subprocess
import sys
import time

d = sys.argv[1]


def read(name):
    with open(os.path.join(d, name)) as f:
        return f.read()


def figures(name):
    return json.loads(read(name + ".json"))


def pgbench_tps(name):
    m = re.search(r"tps = ([\d.]+)", read(name))
    return float(m.group(1)) if m else float("nan")


def pgbench_latency(name):
    m = re.search(r"latency average = ([\d.]+) ms", read(name))
    return float(m.group(1)) if m else float("nan")


def wrk(name):
    text = read(name + ".txt")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", text)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return rps, float(p99.group(1)) * scale


def conns(name):
    text = read(name + ".txt")
    line = [l for l in text.splitlines() if "req/s" in l][-1]
    rps = float(re.search(r"([\d.]+) req/s", line).group(1))
    p99 = float(re.search(r"p99\s+([\d.]+) ms", line).group(1))
    errors = int(re.search(r"(\d+) errors", line).group(1))
    mem = re.search(r"server peak memory (\d+) kB", line)
    return rps, p99, errors, int(mem.group(1)) / 1024 if mem else float("nan")


def ratio(a, b):
    return a / b if b else float("nan")


def ok(met):
    return "met" if met else "**not met**"


cpu = "?"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()

pg = figures("claims-pg")
pgb = pgbench_tps("pgbench-statements.txt")
lag_log, lag_kafka, lag_kafka_10 = figures("lag-log"), figures("lag-kafka"), figures("lag-kafka-10")
sq32, sq64 = figures("claims-sqlite"), figures("claims-sqlite-64")
get_w, get_b = wrk("get-walletd"), wrk("get-bare")
cw, cb, cmax = conns("conns-walletd"), conns("conns-bare"), conns("conns-walletd-max")
warm = [int(x) for x in re.findall(r"warm start \d+: (\d+) ms", read("startup.txt"))]
warm_median = sorted(warm)[len(warm) // 2] if warm else float("nan")

rows = [
    ("Claim requests/s, PostgreSQL, 64 in flight", f"{pg['requests_per_s']:,.0f} (p99 {pg['latency_p99_ms']:.1f} ms)",
     f"pgbench, the claim path's statements, 64 clients: {pgb:,.0f} tps", ratio(pg["requests_per_s"], pgb), ">= 0.5",
     ratio(pg["requests_per_s"], pgb) >= 0.5),
    ("Claims won and processed/s, same run", f"{pg['settled_per_s']:,.0f}", f"{pgb:,.0f} tps",
     ratio(pg["settled_per_s"], pgb), ">= 0.2", ratio(pg["settled_per_s"], pgb) >= 0.2),
    (f"Processing lag p99 at half that rate ({lag_log['rate']:.0f}/s), embedded log",
     f"{lag_log['lag_p99_ms']:.0f} ms (p50 {lag_log['lag_p50_ms']:.0f})", "-", None, "< 100 ms", lag_log["lag_p99_ms"] < 100),
    (f"Processing lag p99 at half that rate ({lag_kafka['rate']:.0f}/s), Kafka",
     f"{lag_kafka['lag_p99_ms']:.0f} ms (p50 {lag_kafka['lag_p50_ms']:.0f})", "-", None, "< 100 ms",
     lag_kafka["lag_p99_ms"] < 100),
    (f"The same over Kafka with `WALLETD_KAFKA_FETCH_WAIT_MS=10` ({lag_kafka_10['rate']:.0f}/s)",
     f"{lag_kafka_10['lag_p99_ms']:.0f} ms (p50 {lag_kafka_10['lag_p50_ms']:.0f})", "-", None, "< 100 ms",
     lag_kafka_10["lag_p99_ms"] < 100),
    ("Cached authenticated GET, wrk, 64 connections", f"{get_w[0]:,.0f} req/s (p99 {get_w[1]:.2f} ms)",
     f"bare axum: {get_b[0]:,.0f} req/s (p99 {get_b[1]:.2f} ms)", ratio(get_w[0], get_b[0]), ">= 0.5",
     ratio(get_w[0], get_b[0]) >= 0.5),
    ("10,000 open connections, the most walletd serves over them", f"{cmax[0]:,.0f} req/s", "-", None, "-", None),
    (f"10,000 open connections at half that ({cw[0]:,.0f} req/s)",
     f"p99 {cw[1]:.2f} ms, {cw[2]} errors, peak RSS {cw[3]:.0f} MB",
     f"bare axum: p99 {cb[1]:.2f} ms, {cb[2]} errors, peak RSS {cb[3]:.0f} MB", None,
     "p99 < 10 ms, RSS within 20 MB", cw[1] < 10 and cw[2] == 0 and cw[3] - cb[3] <= 20),
    ("Claim requests/s, SQLite, 32 in flight", f"{sq32['requests_per_s']:,.0f} (p99 {sq32['latency_p99_ms']:.1f} ms)",
     "first measurement: 4,600 (p99 16 ms)", ratio(sq32["requests_per_s"], 4600), ">= 1.0 (no slower)",
     sq32["requests_per_s"] >= 4600 * 0.95),
    ("Claim requests/s, SQLite, 64 in flight", f"{sq64['requests_per_s']:,.0f} (p99 {sq64['latency_p99_ms']:.1f} ms)",
     "-", None, "-", None),
    ("Start to ready, embedded defaults (median warm start)", f"{warm_median} ms", "-", None, "< 100 ms",
     warm_median < 100),
]

print(f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node() or 'this machine'}: "
      f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}; walletd at {rev}{' (with local changes)' if dirty else ''}; "
      "load generators, PostgreSQL (fsync off), Redis and the broker all on the same cores. Command: `scripts/bench.sh`.")
print()
print("| what | walletd | baseline, same run | ratio | target | |")
print("|---|---|---|---|---|---|")
for what, ours, base, r, target, met in rows:
    rs = f"{r:.2f}" if r is not None else "-"
    verdict = "" if met is None else ok(met)
    print(f"| {what} | {ours} | {base} | {rs} | {target} | {verdict} |")
print()
print("Claim runs: " + "; ".join(
    f"{n}: {f['won_per_s']:,.0f} won/s, {f['settled_per_s']:,.0f} won and processed/s, lag p50 {f['lag_p50_ms']:.0f} / p99 {f['lag_p99_ms']:.0f} ms, "
    f"peak RSS {f['peak_memory']}"
    for n, f in [("PostgreSQL", pg), ("SQLite 32", sq32), ("SQLite 64", sq64)]) + ".")
print()
print("Where PostgreSQL's time went during the claim run (pg_stat_statements, top statements by total time):")
print()
print("| calls | total ms | mean ms | statement |")
print("|---|---|---|---|")
for line in read("statements.tsv").splitlines():
    calls, total, mean, query = line.split("\t", 3)
    query = query.replace("|", "\\|")
    if len(query) > 160:
        query = query[:157] + "..."
    print(f"| {calls} | {total} | {mean} | `{query}` |")
