"""Start test/ros_peer.py in a separate process and stop it reliably."""

import contextlib
import os
import subprocess
import sys

PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ros_peer.py")


@contextlib.contextmanager
def ros_peer(role: str):
    """Run the peer in its own process (own DDS participant) for the duration of the block.

    The process is yielded: a role may take commands on its stdin and answer on its stdout.
    """
    # -P: never import the source tree's sam3d_ros (it lacks the generated interfaces).
    proc = subprocess.Popen(
        [sys.executable, "-P", PEER, role],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", f"peer failed to start: {line}{proc.stdout.read()}"
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
