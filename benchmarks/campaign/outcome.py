"""Cases, outcomes and the case → outcome table of the bad-input campaign.

Every case is judged on the four properties of issue 10: (a) a clear error naming the field,
(b) the process alive (for the CLI: it ended by itself with its documented exit status, no
crash, no hang), (c) the next good input processed, (d) nothing partial on disk. A property
that does not apply to a case is ``None`` (shown as "–"). A case passes when no property is
``False``; a case that fails is reported as failing, never skipped.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple


@dataclass
class Outcome:
    """What one case did.

    Attributes:
        result: what came back: exit status and error line (CLI), diagnostics / goal error
            (node), or the measured figure of a load case.
        named: the error names the expected field (``None``: not applicable).
        alive: the process survived / ended by itself as documented.
        next_good: the next good input was processed.
        disk_clean: nothing partial on disk (no temporary run directory, no run directory
            without its ``result.json``, an existing output untouched).
        note: anything else measured (peak memory, timings as liveness bounds, counts).
    """

    result: str
    named: Optional[bool]
    alive: Optional[bool]
    next_good: Optional[bool]
    disk_clean: Optional[bool]
    note: str = ""

    @property
    def passed(self) -> bool:
        """No property failed."""
        return all(v is not False for v in self.properties())

    def properties(self) -> Tuple[Optional[bool], ...]:
        """(named, alive, next_good, disk_clean)."""
        return (self.named, self.alive, self.next_good, self.disk_clean)

    def failures(self) -> List[str]:
        """Names of the properties that failed."""
        names = ("field named", "alive", "next good processed", "disk clean")
        return [n for n, v in zip(names, self.properties(), strict=True) if v is False]


@dataclass(frozen=True)
class Case:
    """One kind of bad input (or load) sent to the CLI or the node.

    Attributes:
        side: ``"cli"`` or ``"node"``.
        name: short identifier (pytest id, table key).
        input: what is sent, in words.
        field: the field the error must name (a prefix of the reported field); ``""`` for an
            input that must be accepted and processed, or a load case.
        run: ``run(context) -> Outcome``; the context is the side's workspace / node session.
        quick: part of ``--quick`` and of the pytest regression subset.
        known: why it fails today ("issue 10 item N, fix in branch X"); empty when it should
            pass. The harness reports what happens either way.
        group: node cases: the node session they run in (cases of one group share a node).
    """

    side: str
    name: str
    input: str
    field: str
    run: Callable[[Any], Outcome]
    quick: bool = False
    known: str = ""
    group: str = ""


def run_case(case: Case, context: Any) -> Outcome:
    """Run one case; a harness exception becomes a failed outcome saying so."""
    try:
        return case.run(context)
    except Exception as exc:  # noqa: BLE001 -- one broken case must not end the campaign
        return Outcome(
            result=f"harness error: {exc.__class__.__name__}: {exc}",
            named=False, alive=False, next_good=False, disk_clean=False,
            note=traceback.format_exc(limit=3).strip().splitlines()[-1],
        )


# -------------------------------------------------------------------------------- disk checks


def temp_dirs(parent: Path) -> List[str]:
    """Temporary run directories (``.<name>.tmp-*``) left in ``parent``."""
    if not parent.is_dir():
        return []
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and ".tmp" in p.name)


def partial_runs(parent: Path) -> List[str]:
    """Run directories in ``parent`` without their ``result.json`` (written last)."""
    if not parent.is_dir():
        return []
    return sorted(p.name for p in parent.iterdir() if p.is_dir()
                  and not p.name.startswith(".") and not (p / "result.json").is_file())


# -------------------------------------------------------------------------------- memory


def proc_status_mb(pid: int, key: str) -> float:
    """A ``/proc/<pid>/status`` memory figure (``VmRSS``, ``VmHWM`` = peak RSS) in MiB."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


# -------------------------------------------------------------------------------- the table


def _cell(value: Optional[bool]) -> str:
    return "–" if value is None else ("yes" if value else "**NO**")


def _text(value: str, limit: int = 140) -> str:
    value = " ".join(value.split()).replace("|", "\\|")
    return value if len(value) <= limit else value[: limit - 1] + "…"


def markdown_table(results: Sequence[Tuple[Case, Outcome]]) -> str:
    """The case → outcome table (GitHub markdown)."""
    lines = [
        "| # | side | case | input | outcome | field named | alive | next good | disk clean "
        "| verdict | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for index, (case, outcome) in enumerate(results, start=1):
        if outcome.passed:
            verdict = "pass"
        else:
            verdict = "**FAIL**" + (f" ({case.known})" if case.known else " (new finding)")
        field = f" (field `{case.field}`)" if case.field else ""
        lines.append(
            f"| {index} | {case.side} | `{case.name}` | {_text(case.input)}{field} "
            f"| {_text(outcome.result)} | {_cell(outcome.named)} | {_cell(outcome.alive)} "
            f"| {_cell(outcome.next_good)} | {_cell(outcome.disk_clean)} | {verdict} "
            f"| {_text(outcome.note, 160)} |"
        )
    return "\n".join(lines)


def summary(results: Sequence[Tuple[Case, Outcome]]) -> List[str]:
    """Per side: cases, passed, failed (with the failing case names)."""
    out = []
    for side in sorted({c.side for c, _ in results}):
        rows = [(c, o) for c, o in results if c.side == side]
        failed = [c.name for c, o in rows if not o.passed]
        out.append(f"{side}: {len(rows)} cases, {len(rows) - len(failed)} pass, "
                   f"{len(failed)} fail" + (f" ({', '.join(failed)})" if failed else ""))
    return out


def machine() -> str:
    """CPU, cores and memory of this machine, in words."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = proc_meminfo_gib()
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} " \
           f"{platform.release()}, Python {platform.python_version()}"


def proc_meminfo_gib() -> float:
    """Total memory in GiB."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            return int(handle.readline().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def git_commit(repo: Path) -> str:
    """The short commit of ``repo`` (with ``+dirty`` for uncommitted changes)."""
    try:
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--",
                                "sam3d_ros"], capture_output=True, text=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def select(cases: Iterable[Case], quick: bool, names: Sequence[str] = ()) -> List[Case]:
    """The cases to run: all, the quick ones, or those named (substring match)."""
    chosen = [c for c in cases if not quick or c.quick]
    if names:
        chosen = [c for c in chosen if any(n in c.name for n in names)]
    return chosen


def now() -> str:
    """Local date and time, for the report."""
    return time.strftime("%Y-%m-%d %H:%M %Z")
