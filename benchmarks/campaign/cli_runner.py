"""Running ``sam3d-reconstruct`` on bad input and judging the outcome (the CLI side's harness).

Per case: run the CLI on the bad input (a subprocess, ``python -m sam3d_ros.core.cli``), then a
good request into the same output path (or a fresh sibling when the output path itself is the
bad input). Judged: (a) exit status 2 and a line ``error: <field>: <reason>`` on stderr; (b) the
process ended by itself within its liveness bound, without a traceback or an "internal error",
and within its memory bound where the case has one (peak RSS from ``wait4``); (c) the good run
exits 0 with ``result.json``; (d) the output path does not exist or is as it was, and no
temporary run directory (``.<name>.tmp-*``) is left next to it, also after the good run.

The good input is ``examples/tabletop`` subsampled 4× (160×120, three box prompts, uint16 depth
in an NPZ with K), fast enough to run after every case.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from campaign.hostile_http import HostileServer
from campaign.outcome import Outcome, proc_status_mb, temp_dirs

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "tabletop"
SCALE = 4
BAD_TIMEOUT_S = 120.0  # liveness bound of one CLI run (a hang is a failure, not a wait)
GOOD_TIMEOUT_S = 120.0
BOMB_RSS_MB = 450.0  # peak RSS allowed to a run fed a size bomb (a good run: ~110 MB)


@dataclass
class CliRun:
    """One finished CLI process."""

    code: int  # exit status; negative = killed by that signal
    stdout: str
    stderr: str
    seconds: float
    peak_mb: float  # peak RSS of the process (VmHWM sampled while it ran)
    timed_out: bool

    def error_line(self) -> str:
        """The ``error: ...`` line (else the last stderr line)."""
        lines = [ln for ln in self.stderr.splitlines() if ln.strip()]
        for line in lines:
            if line.startswith(("error:", "internal error:", "cancelled")):
                return line
        return lines[-1] if lines else ""

    def describe(self) -> str:
        """Exit status and error line, in words."""
        if self.timed_out:
            return f"no exit within {self.seconds:.0f} s (killed)"
        status = f"exit {self.code}" if self.code >= 0 else f"killed by signal {-self.code}"
        line = self.error_line()
        return f"{status}: {line}" if line else status


class CliWorkspace:
    """Generated inputs of the CLI cases and the command that runs the CLI."""

    def __init__(self, root: Path, bad_timeout_s: float = BAD_TIMEOUT_S):
        import sam3d_ros

        self.root = Path(root)
        self.inp = self.root / "in"
        self.other = self.root / "other"
        self.out = self.root / "out"
        for d in (self.inp, self.other, self.out):
            d.mkdir(parents=True, exist_ok=True)
        self.bad_timeout_s = bad_timeout_s
        # The CLI of the sam3d_ros this process imports (source tree or install).
        self.package_root = str(Path(sam3d_ros.__file__).resolve().parents[1])
        self.command = [sys.executable, "-m", "sam3d_ros.core.cli"]
        self.env = dict(os.environ, PYTHONPATH=self.package_root, PYTHONUNBUFFERED="1")
        self._make_good_inputs()
        self._names: Dict[str, int] = {}
        self._http: Optional[HostileServer] = None

    def http_url(self, path: str) -> str:
        """A URL on the local misbehaving HTTP server (started on first use)."""
        if self._http is None:
            self._http = HostileServer(self.inp / "rgb.png")
        return self._http.url(path)

    def close(self) -> None:
        """Stop the HTTP server."""
        if self._http is not None:
            self._http.close()
            self._http = None

    # ------------------------------------------------------------------ inputs

    def _make_good_inputs(self) -> None:
        rgb = np.asarray(Image.open(EXAMPLE / "rgb.png").convert("RGB"))[::SCALE, ::SCALE]
        npz = np.load(EXAMPLE / "pointmap.npz", allow_pickle=False)
        depth = np.ascontiguousarray(npz["depth"][::SCALE, ::SCALE])
        k = np.array(npz["K"], dtype=np.float64)
        k[:2] /= SCALE  # new pixel u' is old pixel SCALE*u' (pixel centres at integers)
        k[2] = [0.0, 0.0, 1.0]
        self.rgb, self.depth, self.k = rgb, depth, k
        self.height, self.width = rgb.shape[:2]
        Image.fromarray(rgb).save(self.inp / "rgb.png")
        Image.fromarray(rgb).save(self.other / "rgb.png")
        np.savez(self.inp / "depth.npz", depth=depth, K=k)
        request = json.loads((EXAMPLE / "request.json").read_text())
        for box in request["box_prompts"]:
            for key in ("x_min", "y_min", "x_max", "y_max"):
                box[key] = int(box[key]) // SCALE
        request["image_url"], request["pointmap_url"] = "rgb.png", "depth.npz"
        self.request = request
        self.write_request("good", request)

    def path(self, name: str) -> Path:
        """A file in the inputs directory."""
        return self.inp / name

    def write_request(self, name: str, request: Any) -> Path:
        """Write a request file ``in/<name>.json`` (its relative paths are taken from ``in/``)."""
        path = self.inp / f"{name}.json"
        path.write_text(json.dumps(request), encoding="utf-8")
        return path

    def request_with(self, name: str, **changes: Any) -> List[str]:
        """``--request`` of the good request with fields replaced (``None`` removes one)."""
        request = json.loads(json.dumps(self.request))
        for key, value in changes.items():
            if value is None:
                request.pop(key, None)
            else:
                request[key] = value
        return ["--request", str(self.write_request(name, request))]

    def fresh_output(self, name: str) -> Path:
        """An output path that does not exist yet, in its own parent directory."""
        count = self._names.get(name, 0)
        self._names[name] = count + 1
        parent = self.out / (name if not count else f"{name}.{count}")
        parent.mkdir(parents=True)
        return parent / "run"

    # ------------------------------------------------------------------ running

    def run_cli(self, args: Sequence[str], timeout_s: float,
                poll: Optional[Callable[[subprocess.Popen], None]] = None) -> CliRun:
        """Run the CLI; killed after ``timeout_s``.

        Peak RSS is the child's ``VmHWM`` sampled every few milliseconds while it runs
        (``wait4``'s ``ru_maxrss`` would include this process's own peak, inherited at fork).
        """
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen([*self.command, *map(str, args)], stdout=out, stderr=err,
                                    stdin=subprocess.DEVNULL, cwd=self.root, env=self.env)
            t0 = time.monotonic()
            timed_out = False
            peak = 0.0
            while True:
                hwm = proc_status_mb(proc.pid, "VmHWM")
                peak = max(peak, hwm) if hwm == hwm else peak  # NaN once it has exited
                pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if poll is not None:
                    poll(proc)
                if time.monotonic() - t0 > timeout_s:
                    proc.kill()
                    _, status, _ = os.wait4(proc.pid, 0)
                    timed_out = True
                    break
                time.sleep(0.002 if poll is not None else 0.005)
            seconds = time.monotonic() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
            out.seek(0)
            err.seek(0)
            return CliRun(proc.returncode, out.read().decode(errors="replace"),
                          err.read().decode(errors="replace"), seconds, peak, timed_out)

    def good_run(self, output: Path) -> CliRun:
        """The good request into ``output``."""
        return self.run_cli(["--request", self.inp / "good.json", "--output", output],
                            GOOD_TIMEOUT_S)

    def next_good(self, output: Path) -> Tuple[bool, List[str], str]:
        """The good request into ``output``: (succeeded, temp dirs left next to it, note)."""
        run = self.good_run(output)
        ok = run.code == 0 and (output / "result.json").is_file()
        left = temp_dirs(output.parent)
        notes = [] if ok else [f"next good run: {run.describe()}"]
        if left:
            notes.append(f"temp dirs after the next good run: {left}")
        return ok, left, "; ".join(notes)


# -------------------------------------------------------------------------------- judging


def _snapshot(path: Path) -> Optional[Dict[str, Any]]:
    if not os.path.lexists(path):
        return None
    if path.is_symlink():
        return {"link": os.readlink(path)}
    if path.is_file():
        return {"file": path.read_bytes()}
    return {"dir": sorted(p.name for p in path.iterdir())}


def _output_clean(path: Path, before: Optional[Dict[str, Any]]) -> bool:
    after = _snapshot(path)
    if before is None:
        return after is None or after == {"dir": []}
    return after == before


def _alive(run: CliRun, rss_limit_mb: Optional[float]) -> tuple:
    problems = []
    if run.timed_out:
        problems.append(f"no exit within {run.seconds:.0f} s")
    elif run.code < 0:
        problems.append(f"killed by signal {-run.code}")
    if "Traceback" in run.stderr or "internal error" in run.stderr:
        problems.append("traceback / internal error")
    if rss_limit_mb is not None and run.peak_mb > rss_limit_mb:
        problems.append(f"peak RSS {run.peak_mb:.0f} MB > bound {rss_limit_mb:.0f} MB")
    return not problems, problems


def check_bad(ws: CliWorkspace, name: str, argv: Sequence[Any], field: str, *,
              output: Optional[Path] = None, fresh_next: bool = False,
              timeout_s: Optional[float] = None, rss_limit_mb: Optional[float] = None,
              accept_success: bool = False) -> Outcome:
    """Run one bad input and judge the four properties (see the module docstring)."""
    output = output or ws.fresh_output(name)
    before = _snapshot(output)
    run = ws.run_cli([*argv, "--output", output], timeout_s or ws.bad_timeout_s)
    lines = run.stderr.splitlines()
    named = run.code == 2 and any(ln.startswith(f"error: {field}") for ln in lines)
    succeeded = run.code == 0 and (output / "result.json").is_file()
    if accept_success and succeeded:
        named = True
    alive, problems = _alive(run, rss_limit_mb)
    clean = (succeeded and accept_success) or _output_clean(output, before)
    left = temp_dirs(output.parent)
    notes = [f"peak RSS {run.peak_mb:.0f} MB, {run.seconds:.1f} s"] + problems
    if not clean:
        notes.append(f"output after the run: {_describe_path(output)}")
    if left:
        notes.append(f"temp dirs left: {left}")
    next_output = ws.fresh_output(name + "-next") if fresh_next or succeeded else output
    next_ok, left_next, next_note = ws.next_good(next_output)
    if next_note:
        notes.append(next_note)
    clean = clean and not left and not left_next
    return Outcome(run.describe(), named, alive, next_ok, clean, "; ".join(notes))


def _describe_path(path: Path) -> str:
    snap = _snapshot(path)
    if snap is None:
        return "absent"
    if "dir" in snap:
        return f"directory with {snap['dir'][:5]}"
    return next(iter(snap))


def during_export(ws: CliWorkspace, name: str, sig: int) -> Outcome:
    """Send ``sig`` while the run's temporary directory exists (the export), then judge.

    A SIGINT / SIGTERM must end the run cleanly (README: exit 130 "cancelled" for Ctrl-C, 143
    "terminated" for SIGTERM; the temporary directory removed); after a SIGKILL the next run in
    the same parent must leave no temporary directory behind.
    """
    attempts = []
    for _ in range(5):  # the export lasts a fraction of a second: retry a missed window
        output = ws.fresh_output(name)
        sent: List[float] = []

        def poll(proc: subprocess.Popen, parent: Path = output.parent,
                 sent: List[float] = sent) -> None:
            if not sent and temp_dirs(parent):
                proc.send_signal(sig)
                sent.append(time.monotonic())

        # The full-size example: its export is long enough to be hit.
        run = ws.run_cli(["--request", EXAMPLE / "request.json", "--output", output],
                         GOOD_TIMEOUT_S, poll=poll)
        if sent:
            break
        attempts.append(run.describe())
    else:
        return Outcome(f"export window never hit in 5 runs ({attempts[-1]})", None, None, None,
                       None, "harness could not time the signal")
    partial = os.path.lexists(output)
    left_after_run = temp_dirs(output.parent)
    next_ok, left_after_next, next_note = ws.next_good(output.parent / "next")
    if sig == signal.SIGKILL:
        named = alive = None
    else:
        code, word = (143, "terminated") if sig == signal.SIGTERM else (130, "cancelled")
        named = run.code == code and word in run.stderr
        alive = run.code >= 0 and not run.timed_out
    notes = [f"temp dirs right after the signal: {left_after_run or 'none'}"]
    if partial:
        notes.append(f"partial output: {_describe_path(output)}")
    if next_note:
        notes.append(next_note)
    clean = not partial and not left_after_next
    if sig != signal.SIGKILL:
        clean = clean and not left_after_run
    return Outcome(run.describe(), named, alive, next_ok, clean, "; ".join(notes))




@contextlib.contextmanager
def cli_workspace(root: Path):
    """The CLI side's workspace under ``root``."""
    ws = CliWorkspace(root)
    try:
        yield ws
    finally:
        ws.close()
