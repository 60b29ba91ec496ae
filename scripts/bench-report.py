#!/usr/bin/env python3
"""Renders BENCHMARKS.md from the benchmark results in target/bench/*.jsonl.

Every benchmark writes JSON lines into target/bench/<section>.jsonl, one per figure:

    {"section": "kube-sim", "section_title": "...", "order": 10, "seq": 1,
     "figure": "...", "display": "...", "baseline": "...", "command": "...",
     "machine": {"nproc": 2, "memory_bytes": 25275817984, "cpu_model": "...", "load_avg": 0.4},
     "date": "2025-01-31", "value": 1234.5, "unit": "objects/s", ...}

or a note about the section's method (rendered under its table):

    {"section": "kube-sim", "note": "..."}

Each section becomes one table (figure, value, goal/baseline, command, machine, date) between
`<!-- bench-section: NAME -->` markers. Sections of the existing BENCHMARKS.md without fresh
results are kept as they are, so running one benchmark never drops another's figures.

Usage: scripts/bench-report.py [--results DIR] [--output FILE]
"""

import argparse
import glob
import json
import os
import re
import sys

HEADER = """# Benchmarks

Written by `make bench` (`scripts/bench-report.py` renders the results each benchmark leaves in
`target/bench/*.jsonl`); do not edit by hand. `make bench SCALE=full` runs the larger sizes.
Timing goals live here, never in tests. Every figure names the command that produced it, the
machine it ran on and its date, and is held against a goal or a published baseline.
"""

SECTION_RE = re.compile(
    r"<!-- bench-section: (?P<name>[\w.-]+) order=(?P<order>\d+) -->\n"
    r"(?P<body>.*?)"
    r"<!-- /bench-section: (?P=name) -->\n",
    re.S,
)


def cell(text):
    """Escapes a value for a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def machine(m):
    memory = m.get("memory_bytes", 0) / 2**30
    text = f"{m.get('nproc', '?')} CPU, {memory:.1f} GiB, {m.get('cpu_model', 'unknown')}"
    if "load_avg" in m:
        # Other work on the machine skews timings; say how busy it was.
        text += f", load {m['load_avg']:.1f} at start"
    return text


def render_section(name, records):
    figures = sorted((r for r in records if "figure" in r), key=lambda r: r.get("seq", 0))
    notes = [r["note"] for r in records if "note" in r]
    title = next((r["section_title"] for r in figures if r.get("section_title")), name)
    order = next((r["order"] for r in figures if "order" in r), 100)
    lines = [f"<!-- bench-section: {name} order={order} -->", f"## {title}", ""]
    lines.append("| Figure | Value | Goal / baseline | Command | Machine | Date |")
    lines.append("|---|---|---|---|---|---|")
    for r in figures:
        lines.append(
            "| "
            + " | ".join(
                cell(x)
                for x in (
                    r["figure"],
                    r["display"],
                    r.get("baseline", ""),
                    f"`{r.get('command', '')}`",
                    machine(r.get("machine", {})),
                    r.get("date", ""),
                )
            )
            + " |"
        )
    if notes:
        lines.append("")
        lines.extend(f"- {n}" for n in notes)
    lines.append(f"<!-- /bench-section: {name} -->")
    return int(order), "\n".join(lines) + "\n"


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=os.path.join(root, "target", "bench"))
    parser.add_argument("--output", default=os.path.join(root, "BENCHMARKS.md"))
    args = parser.parse_args()

    fresh = {}
    for path in sorted(glob.glob(os.path.join(args.results, "*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    sys.exit(f"{path}:{number}: {err}")
                fresh.setdefault(record["section"], []).append(record)

    sections = {}
    if os.path.exists(args.output):
        with open(args.output, encoding="utf-8") as f:
            for m in SECTION_RE.finditer(f.read()):
                sections[m.group("name")] = (int(m.group("order")), m.group(0))
    for name, records in fresh.items():
        if any("figure" in r for r in records):
            sections[name] = render_section(name, records)
    if not sections:
        sys.exit(f"no results in {args.results} and no sections in {args.output}")

    body = "\n".join(text for _, text in sorted(sections.values(), key=lambda s: s[0]))
    tmp = args.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(HEADER + "\n" + body)
    os.replace(tmp, args.output)
    print(f"wrote {args.output} ({len(sections)} section(s), {len(fresh)} refreshed)")


if __name__ == "__main__":
    main()
