#!/usr/bin/env python3
"""Renders BENCHMARKS.md from the benchmark results in target/bench/*.jsonl.

Every benchmark writes JSON lines into target/bench/<section>.jsonl, one per figure:

    {"section": "kube-sim", "section_title": "...", "order": 10, "seq": 1,
     "figure": "...", "display": "...", "baseline": "...", "command": "...",
     "machine": {"nproc": 2, "memory_bytes": 25275817984, "cpu_model": "...", "load_avg": 0.4},
     "date": "2025-01-31", "value": 1234.5, "unit": "objects/s", ...}

or a note about the section's method (rendered under its table):

    {"section": "kube-sim", "note": "..."}

or a plot the benchmark drew, a file next to the results (copied next to the output as
`bench-<file>` and linked under the table):

    {"section": "agents", "plot": "agents.png", "plot_title": "..."}

A figure may carry a stated goal instead of (or besides) a baseline: `"goal": "<= 600 MiB at 10k"`
and `"goal_met": true | false | null`. A section whose figures carry goals renders the goal
table (figure, value, goal, command, machine, date), the goal cell saying whether it is met, and
every fresh figure with a `goal_met` verdict is listed in the closing "Goals" section.

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
import shutil
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


def verdict(record):
    """The goal cell: the goal, whether it is met, and any baseline."""
    text = record.get("goal", "")
    met = record.get("goal_met")
    if met is True:
        text += " — **met**"
    elif met is False:
        text += " — **missed**"
    if record.get("baseline"):
        text += f"; {record['baseline']}" if text else record["baseline"]
    return text


def render_section(name, records, results_dir, output_dir):
    figures = sorted((r for r in records if "figure" in r), key=lambda r: r.get("seq", 0))
    notes = [r["note"] for r in records if "note" in r]
    plots = [r for r in records if "plot" in r]
    title = next((r["section_title"] for r in figures if r.get("section_title")), name)
    order = next((r["order"] for r in figures if "order" in r), 100)
    with_goals = any("goal" in r for r in figures)
    lines = [f"<!-- bench-section: {name} order={order} -->", f"## {title}", ""]
    if with_goals:
        lines.append("| Figure | Value | Goal | Command | Machine | Date |")
    else:
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
                    verdict(r) if with_goals else r.get("baseline", ""),
                    f"`{r.get('command', '')}`",
                    machine(r.get("machine", {})),
                    r.get("date", ""),
                )
            )
            + " |"
        )
    for p in plots:
        source = os.path.join(results_dir, p["plot"])
        if not os.path.exists(source):
            continue
        target = f"bench-{os.path.basename(p['plot'])}"
        shutil.copyfile(source, os.path.join(output_dir, target))
        lines.append("")
        lines.append(f"![{p.get('plot_title', target)}]({target})")
    if notes:
        lines.append("")
        lines.extend(f"- {n}" for n in notes)
    lines.append(f"<!-- /bench-section: {name} -->")
    return int(order), "\n".join(lines) + "\n"


def render_goals(fresh):
    """The closing section: every fresh figure with a verdict, met or missed."""
    met, missed = [], []
    for records in fresh.values():
        for r in sorted((r for r in records if "figure" in r), key=lambda r: r.get("seq", 0)):
            if r.get("goal_met") is True:
                met.append(r)
            elif r.get("goal_met") is False:
                missed.append(r)
    if not met and not missed:
        return None
    lines = ["<!-- bench-section: goals order=900 -->", "## Goals: met and missed", ""]
    lines.append(f"Met ({len(met)}):")
    lines.append("")
    lines.extend(f"- {r['figure']}: {r['display']} (goal: {r.get('goal', '')})" for r in met)
    if not met:
        lines.append("- none")
    lines.append("")
    lines.append(f"Missed ({len(missed)}), with what limits them in the section's notes:")
    lines.append("")
    lines.extend(f"- {r['figure']}: {r['display']} (goal: {r.get('goal', '')})" for r in missed)
    if not missed:
        lines.append("- none")
    lines.append("<!-- /bench-section: goals -->")
    return 900, "\n".join(lines) + "\n"


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
    output_dir = os.path.dirname(os.path.abspath(args.output))
    for name, records in fresh.items():
        if any("figure" in r for r in records):
            sections[name] = render_section(name, records, args.results, output_dir)
    goals = render_goals(fresh)
    if goals:
        sections["goals"] = goals
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
