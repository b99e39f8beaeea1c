"""The "Cluster" figures of docs/BENCHMARKS.md, from the raw results of scripts/bench-cluster.

Reads DIR/cluster-run.json (the machine, the disk, the settings, the command),
DIR/cluster-appends.jsonl (one myelin-load or etcd-load result per run, labelled
"SETUP round N") and DIR/cluster-catchup.jsonl, and prints the markdown section, or writes it
between the bench-cluster markers of a markdown file (--into). Standard library only.

Usage: python3 bench/cluster_report.py DIR [--into docs/BENCHMARKS.md]
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

NAMES = {
    "single": "Myelin, single node",
    "cluster": "Myelin, 3 nodes, via leader",
    "follower": "Myelin, 3 nodes, via follower",
    "etcd": "etcd, 3 members, via leader",
    "etcd-follower": "etcd, 3 members, via follower",
}
START, END = "<!-- bench-cluster:start -->", "<!-- bench-cluster:end -->"


def read_lines(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def spread(values, fmt):
    """Median, and the lowest and highest in brackets."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}–{fmt(max(values))})"


def rate(v):
    return f"{v:,.0f}"


def ms(v):
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def ratio(v):
    return f"{v:.2f}"


def pct(v):
    return f"{v:.0f}"


class Runs:
    def __init__(self, appends):
        # (clients, events) -> setup -> round -> record
        self.cells = defaultdict(dict)
        for r in appends:
            setup, _, rnd = (r.get("label") or "? round 0").partition(" round ")
            self.cells[(r["clients"], r["events_per_tx"])].setdefault(setup, {})[int(rnd or 0)] = r

    def ordered(self):
        return sorted(self.cells, key=lambda c: (c[1], c[0]))

    def ratios(self, cell, setup, other):
        """Events/s of each round's run of `setup` over the same round's run of `other`."""
        mine, theirs = self.cells[cell].get(setup, {}), self.cells[cell].get(other, {})
        return [
            mine[k]["events_per_sec"] / theirs[k]["events_per_sec"]
            for k in sorted(mine)
            if k in theirs and theirs[k]["events_per_sec"] > 0
        ]


def latency(r, key):
    return (r.get("latency") or {}).get("append", {}).get(key)


def extra(r, key):
    return (r.get("extra") or {}).get(key)


def preamble(run):
    out = []
    took = (run["finished_at"] - run["started_at"] + 59) // 60
    out.append(f"Written by `{run['command']}`, commit {run['commit']}, {run['finished_at_text']}, in {took} minutes.")
    if run.get("mode") == "quick":
        out.append("**A quick run: short windows, one round; not figures to quote.**")
    if run.get("note"):
        out.append("")
        out.append(run["note"])
    out += ["", "| | |", "|---|---|"]
    out.append(f"| CPU | {run['cpu']}, {run['vcpus']} vCPUs |")
    out.append(f"| RAM | {run['ram_gib']} GiB |")
    out.append(f"| kernel | {run['kernel']} |")
    out.append(f"| data directories | `{run['scratch']}` on {run['filesystem']} |")
    out.append(f"| load average (1, 5, 15 min) | {run['load_at_start']} at the start, {run['load_at_end']} at the end |")
    out.append(
        f"| disk, sequential | `dd` of {run['dd_mib']} MiB of random bytes with `conv=fdatasync`: "
        f"{run['dd_mb_per_sec']:.0f} MB/s; `myelin-load disk`, 4 MiB per `fdatasync`: {run['probe_mb_per_sec']:.0f} MB/s |"
    )
    out.append(f"| `fdatasync`, 4 KiB | p50 {run['fdatasync_p50_ms']} ms, p99 {run['fdatasync_p99_ms']} ms |")
    if run.get("etcd"):
        out.append(
            f"| etcd | {run['etcd']} (Debian `etcd-server`), defaults but `--quota-backend-bytes 8589934592`; "
            f"driven by `bench/etcd-load` with `go.etcd.io/etcd/client/v3` {run['etcd_client']} |"
        )
    out.append(f"| Myelin | {run['myelin']} |")
    out.append("")
    out.append(
        f"Append windows: {run['append_seconds']} s after {run['warmup_seconds']} s of warm-up, "
        f"{run['rounds']} round(s) per cell, a fresh server, cluster or etcd cluster for every run, "
        f"200-byte payloads. Before each run the script waited until the rest of the machine kept at most "
        f"{run['quiet_percent']} % of a core busy. Servers, members and load generator share the machine's CPUs. "
        f"Catch-up: {run['catchup_events']:,} events of {run['catchup_payload_bytes']}-byte payloads, "
        "100 per transaction, 16 loaders, through the leader."
    )
    out.append("")
    out.append(
        "Raw results: [bench/cluster-appends.jsonl](bench/cluster-appends.jsonl) (one `myelin-load`/`etcd-load` "
        "line per run, labelled `SETUP round N`), [bench/cluster-catchup.jsonl](bench/cluster-catchup.jsonl), "
        "[bench/cluster-run.json](bench/cluster-run.json); `python3 bench/cluster_report.py docs/bench` "
        "prints this section again from them."
    )
    if run.get("failures"):
        out += ["", "**Runs that failed** (missing from the tables):", ""]
        out += [f"- {f}" for f in run["failures"]]
    return out


def append_tables(runs):
    out = ["", "#### Durable appends", ""]
    out.append(
        "Median of the rounds, lowest–highest in brackets. *vs single*: events/s of the run over the "
        "single node's run of the same round, median (lowest–highest) over the rounds. *Members' CPU*: "
        "all server processes of the setup, % of one core, from the load generator's first connection to "
        "the end of its window (warm-up included); the machine has 2 cores. *Others*: CPU time in user "
        "and system mode of processes that are neither the setup's nor the load generator's nor kernel "
        "threads, % of one core over the same time, median (highest): other work on the machine."
    )
    out.append("")
    out.append("| clients | events/tx | setup | rounds | events/s | p50 ms | p99 ms | p99.9 ms | vs single | members' CPU % | others % |")
    out.append("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cell in runs.ordered():
        for setup in NAMES:
            rs = list(runs.cells[cell].get(setup, {}).values())
            if not rs:
                continue
            vs = "1" if setup == "single" else spread(runs.ratios(cell, setup, "single"), ratio)
            others = [extra(r, "others_cpu_percent") for r in rs]
            others = [o for o in others if o is not None]
            others_text = f"{statistics.median(others):.0f} ({max(others):.0f})" if others else "–"
            out.append(
                f"| {cell[0]} | {cell[1]} | {NAMES[setup]} | {len(rs)} "
                f"| {spread([r['events_per_sec'] for r in rs], rate)} "
                f"| {spread([latency(r, 'p50_ms') for r in rs], ms)} "
                f"| {spread([latency(r, 'p99_ms') for r in rs], ms)} "
                f"| {spread([latency(r, 'p999_ms') for r in rs], ms)} "
                f"| {vs} "
                f"| {spread([extra(r, 'members_cpu_percent') for r in rs], pct)} "
                f"| {others_text} |"
            )
    return out


def goal_tables(runs):
    out = ["", "#### Goals", "", "| goal | cell | measured: median (lowest–highest) over rounds | met |", "|---|---|---:|---|"]

    def goal(text, cell, setup, other, floor):
        rs = runs.ratios(cell, setup, other) if cell in runs.cells else []
        if not rs:
            out.append(f"| {text} | {cell[0]} × {cell[1]} | not measured | – |")
            return
        med = statistics.median(rs)
        if med >= floor:
            verdict = "**yes**" if min(rs) >= floor else "yes in the median, not in every round"
        else:
            verdict = "**no**"
        out.append(f"| {text} | {cell[0]} × {cell[1]} | {spread(rs, ratio)} | {verdict} |")

    goal("3 nodes ≥ 50 % of a single node's events/s", (64, 100), "cluster", "single", 0.5)
    goal("3 nodes ≥ 33 % of a single node's events/s", (64, 1), "cluster", "single", 0.33)
    for cell in runs.ordered():
        if "etcd" in runs.cells[cell] and "cluster" in runs.cells[cell]:
            goal("3 nodes ahead of etcd (Myelin cluster / etcd events/s)", cell, "cluster", "etcd", 1.0)
    return out


def catchup_table(catchups, run):
    if not catchups:
        return []
    out = ["", "#### Catch-up of a member that was stopped", ""]
    out.append(
        "*Time*: from starting node-3 (on its old data) until its `GetLastToken` equals the leader's. "
        "*MB/s*: the events it lacked (serialized bytes, the leader's `myelin_appended_bytes_total`) over "
        "that time. *Load*: the rate at which the two running nodes took the data while node-3 was down."
    )
    out.append("")
    out.append("| how | behind | time | MB/s | ÷ disk (dd) | ÷ disk (4 MiB + fdatasync) | load, events/s | what happened |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---|")
    for c in catchups:
        mb = c["bytes_behind"] / 1e6
        speed = mb / c["seconds"] if c["seconds"] > 0 else float("nan")
        out.append(
            f"| {c['mode']} | {mb:,.0f} MB ({c['events_behind']:,} events) | {c['seconds']:.1f} s | {speed:.1f} "
            f"| {speed / run['dd_mb_per_sec']:.2f} | {speed / run['probe_mb_per_sec']:.2f} "
            f"| {c.get('load_events_per_sec', 0):,} | {c.get('how_it_went', '')} |"
        )
    return out


def section(directory):
    directory = Path(directory)
    run = json.loads((directory / "cluster-run.json").read_text())
    runs = Runs(read_lines(directory / "cluster-appends.jsonl"))
    catchups = read_lines(directory / "cluster-catchup.jsonl")
    lines = preamble(run) + append_tables(runs) + goal_tables(runs) + catchup_table(catchups, run)
    return "\n".join(lines) + "\n"


def write_into(path, text):
    path = Path(path)
    doc = path.read_text()
    block = f"{START}\n{text.rstrip()}\n{END}"
    if START in doc and END in doc:
        head, rest = doc.split(START, 1)
        doc = head + block + rest.split(END, 1)[1]
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(doc)


def main(argv):
    if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--into"):
        sys.exit(__doc__)
    text = section(argv[1])
    if len(argv) == 4:
        write_into(argv[3], text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main(sys.argv)
