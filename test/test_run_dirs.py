"""Run directories on disk (sam3d_ros.core.run_dirs): stale temporary dirs, pruning, and the CLI
killed (SIGKILL) or terminated (SIGTERM) while it exports."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sam3d_ros.core.cli import main
from sam3d_ros.core.run_dirs import prune_runs, remove_stale_temps, temp_dir_path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "tabletop"


def dead_pid():
    """A pid that ran here and has exited (reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_prune_runs_keeps_newest_node_runs_only(tmp_path):
    for i in range(5):
        d = tmp_path / f"frame_20260101T00000{i}_000000_{i}"
        d.mkdir()
        os.utime(d, (1000 + i, 1000 + i))
    (tmp_path / "my_notes").mkdir()
    deleted = prune_runs(tmp_path, 2)
    assert len(deleted) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "frame_20260101T000003_000000_3", "frame_20260101T000004_000000_4", "my_notes"]
    assert prune_runs(tmp_path, 0) == []


def test_stale_temps_removed_live_ones_and_strangers_kept(tmp_path):
    own = temp_dir_path(tmp_path / "run")  # this process is writing it
    own.mkdir()
    (own / "scene.glb").write_bytes(b"x")
    dead = tmp_path / f".frame_1.tmp-{dead_pid()}-abc123_x"
    dead.mkdir()
    (dead / "scene.ply").write_bytes(b"x" * 1000)
    old = tmp_path / f".goal_2.tmp-{os.getpid()}-zzzzzzzz"  # a live pid, but two hours old
    old.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    strangers = [tmp_path / ".cache", tmp_path / ".notes.tmp-12", tmp_path / "x.tmp-1-abc"]
    for path in strangers:
        path.mkdir()
    link = tmp_path / f".link.tmp-{dead_pid()}-abcdefgh"
    link.symlink_to(tmp_path / ".cache")

    deleted = remove_stale_temps(tmp_path)
    assert sorted(deleted) == sorted([dead, old])
    assert own.is_dir() and (own / "scene.glb").is_file()
    assert all(p.is_dir() for p in strangers) and link.is_symlink()
    assert remove_stale_temps(tmp_path / "missing") == []


# ----------------------------------------------------------------- the CLI, killed mid-export

# Runs the real CLI; the first file written into the temporary run directory announces itself
# on stdout and then waits, so the signal lands during the export, not before or after it.
PAUSED_CLI = """
import sys, time
from sam3d_ros.core import export
from sam3d_ros.core.cli import main

real_write = export._write_file

def paused_write(path, chunks):
    real_write(path, chunks)
    print("EXPORTING", path.parent, flush=True)
    time.sleep(120)

export._write_file = paused_write
sys.exit(main(sys.argv[1:]))
"""


def start_paused_cli(out):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + sys.path))
    argv = [sys.executable, "-c", PAUSED_CLI, "--request", str(EXAMPLE / "request.json"),
            "--output", str(out), "--quiet"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            text=True)
    line = proc.stdout.readline()  # blocks until the export is under way (or the CLI died)
    if not line.startswith("EXPORTING"):
        proc.kill()
        pytest.fail(f"the CLI did not reach the export: {line!r} {proc.communicate()}")
    return proc, Path(line.split(maxsplit=1)[1].strip())


def hidden(parent):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture
def example():
    if not (EXAMPLE / "request.json").is_file():
        pytest.skip("examples/tabletop is missing (run tools/make_example_scene.py)")
    return EXAMPLE


def test_sigterm_during_export_leaves_nothing(example, tmp_path):
    proc, temp = start_paused_cli(tmp_path / "run")
    assert temp.parent == tmp_path and temp.name.startswith(".run.tmp-") and temp.is_dir()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated; nothing written" in err
    assert list(tmp_path.iterdir()) == []  # no run dir, no temporary dir


def test_sigkill_during_export_then_the_next_run_cleans_up(example, tmp_path, capsys):
    proc, temp = start_paused_cli(tmp_path / "run")
    proc.kill()
    proc.wait(timeout=60)
    assert temp.is_dir() and hidden(tmp_path) == [temp.name]  # what SIGKILL leaves
    assert not (tmp_path / "run").exists()

    code = main(["--request", str(example / "request.json"), "--output",
                 str(tmp_path / "again"), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert len(json.loads(out)["metadata"]) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["again"]  # the killed run's temp is gone
