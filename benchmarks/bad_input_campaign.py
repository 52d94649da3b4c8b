#!/usr/bin/env python3
"""The bad-input and load campaign of issue 10: the CLI and the node against adversarial input.

Every case sends one kind of bad input (or load) and judges four properties: a clear error
naming the field, the process alive, the next good input processed, nothing partial on disk
(see ``docs/reliability.md`` for the method and the latest table). Cases that fail are reported
as failing; none is skipped.

Run from the repository root with the package installed (``bash tools/bootstrap.sh jazzy``)::

    .venv/jazzy/bin/python -P benchmarks/bad_input_campaign.py             # CLI and node
    .venv/jazzy/bin/python -P benchmarks/bad_input_campaign.py --cli --quick
    .venv/jazzy/bin/python -P benchmarks/bad_input_campaign.py --node --soak-s 600 \\
        --markdown docs/reliability.md                                    # update the table

``--markdown`` replaces the section of each side that ran (between its ``campaign:<side>``
markers) and keeps the rest of the file. The CLI side needs no ROS; the node side runs the
installed node (``test/node_harness.py``) over DDS on this host only.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # the campaign package
sys.path.insert(0, str(REPO / "test"))  # node_harness (the node side)
sys.path.append(str(REPO))  # sam3d_bench; appended so the installed sam3d_ros wins
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

from campaign.outcome import (  # noqa: E402
    Case,
    Outcome,
    git_commit,
    machine,
    markdown_table,
    now,
    run_case,
    select,
    summary,
)


def _run_side(side: str, cases: List[Case], context_factory) -> List[Tuple[Case, Outcome]]:
    results = []
    with context_factory() as context:
        for index, case in enumerate(cases, start=1):
            t0 = time.monotonic()
            print(f"[{side} {index}/{len(cases)}] {case.name} ...", end=" ", flush=True)
            outcome = run_case(case, context)
            verdict = "pass" if outcome.passed else "FAIL " + ", ".join(outcome.failures())
            print(f"{verdict} ({time.monotonic() - t0:.1f} s) | {outcome.result}"
                  + (f" | {outcome.note}" if outcome.note else ""), flush=True)
            results.append((case, outcome))
    return results


def _section(side: str, results, args, seconds: float) -> str:
    import sam3d_ros

    mode = "quick subset" if args.quick else "all cases"
    if args.case:
        mode = f"cases matching {args.case}"
    soak = f", soak {args.soak_s:g} s" if side == "node" else ""
    lines = [
        f"Run {now()}: commit `{git_commit(REPO)}`, {mode}{soak}, {seconds / 60:.1f} min.",
        f"Machine: {machine()}. Package: `{Path(sam3d_ros.__file__).parent}`.",
        "",
        "Summary: " + "; ".join(summary(results)),
        "",
        markdown_table(results),
    ]
    return "\n".join(lines)


def _write_markdown(path: Path, sections: dict) -> None:
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    for side, body in sections.items():
        begin, end = f"<!-- campaign:{side} begin -->", f"<!-- campaign:{side} end -->"
        block = f"{begin}\n{body}\n{end}"
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _m, b=block: b, text)
        else:
            text += f"\n\n## {side.upper()} cases\n\n{block}\n"
    path.write_text(text, encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cli", action="store_true", help="run the CLI cases")
    ap.add_argument("--node", action="store_true", help="run the node cases")
    ap.add_argument("--quick", action="store_true",
                    help="the quick subset only (the pytest regression cases)")
    ap.add_argument("--case", action="append", default=[], metavar="NAME",
                    help="only cases whose name contains NAME (repeatable)")
    ap.add_argument("--soak-s", type=float, default=600.0,
                    help="node soak duration at 30 Hz, seconds (0 = no soak; default %(default)g)")
    ap.add_argument("--bad-every-s", type=float, default=30.0,
                    help="soak: one bad frame every this many seconds (default %(default)g)")
    ap.add_argument("--markdown", type=Path, metavar="FILE",
                    help="write the tables into FILE (e.g. docs/reliability.md)")
    ap.add_argument("--workdir", type=Path, help="keep the generated inputs and outputs here")
    args = ap.parse_args()
    sides = [s for s in ("cli", "node") if getattr(args, s)] or ["cli", "node"]

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sam3d-campaign-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sections = {}
    all_results = []
    try:
        for side in sides:
            t0 = time.monotonic()
            if side == "cli":
                from campaign.cli_cases import cli_cases
                from campaign.cli_runner import cli_workspace

                cases = select(cli_cases(), args.quick, args.case)
                results = _run_side("cli", cases, lambda: cli_workspace(workdir / "cli"))
            else:
                from campaign.node_cases import node_cases
                from campaign.node_session import node_campaign

                cases = select(node_cases(args.soak_s, args.bad_every_s), args.quick, args.case)
                results = _run_side("node", cases, lambda: node_campaign(workdir / "node"))
            sections[side] = _section(side, results, args, time.monotonic() - t0)
            all_results += results
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(summary(all_results)))
    if args.markdown:
        _write_markdown(args.markdown, sections)
        print(f"wrote {args.markdown}")
    return 0 if all(o.passed for _, o in all_results) else 1


if __name__ == "__main__":
    sys.exit(main())
