#!/usr/bin/env python3
"""Benchmark of the sam3d node process on a real ROS graph (embedded backends).

1. frame → TF latency: one synthetic 640×480 RGB-D frame with 3 box-prompted objects at a time
   (stamped "now"), time until its /tf arrives here; p50 / p95 (target p50 <= 200 ms on 2 cores).
2. 30 Hz input for ``--seconds`` (default 120): processed rate, drops (from /diagnostics) and the
   node process's RSS growth between the end of a warm-up and the end (target flat within 5 %).

Run with the package installed (tools/bootstrap.sh), from the venv::

    python -P benchmarks/bench_node.py                 # full: 120 s at 30 Hz
    python -P benchmarks/bench_node.py --seconds 20    # shorter
    python -P benchmarks/bench_node.py --subscribe-all # also subscribe to every heavy output
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "test"))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")

from node_harness import (  # noqa: E402
    Recorder,
    box_prompt,
    camera_info,
    ros_context,
    running_node,
    scene,
)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def wait_tf(rec, header, timeout=10.0):
    def has():
        return any(m.transforms and m.transforms[0].header.stamp == header.stamp
                   for m in rec.get("tf"))

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with rec.lock:
            for msg, arrived in zip(rec.msgs["tf"], rec.arrival["tf"], strict=True):
                if msg.transforms and msg.transforms[0].header.stamp == header.stamp:
                    return arrived
        time.sleep(0.001)
    return None if not has() else time.monotonic()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="30 Hz phase duration")
    ap.add_argument("--latency-frames", type=int, default=30)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--subscribe-all", action="store_true",
                    help="keep subscribers on objects/markers/points/debug_image (heavier)")
    args = ap.parse_args()

    print(f"cores: {os.cpu_count()}  image: {args.width}x{args.height}  objects: 3")
    sc = scene(seed=args.seed, width=args.width, height=args.height)
    info = camera_info(sc.intrinsics)
    with ros_context(), running_node({"camera_qos_reliability": "reliable"}) as node:
        rec = Recorder("sam3d_bench_peer")
        if not args.subscribe_all:
            for sub in list(rec.node.subscriptions):
                if sub.topic_name not in ("/tf", "/diagnostics"):
                    rec.node.destroy_subscription(sub)
        assert rec.wait_subscribed()
        rec.pub_prompt.publish(box_prompt(sc))
        time.sleep(1.0)

        # 1. frame -> TF latency, one frame at a time (first 3 frames are warm-up).
        lat = []
        for i in range(args.latency_frames + 3):
            sent = time.monotonic()
            header = rec.publish_frame(sc.frame.rgb, sc.depth_m, info)
            arrived = wait_tf(rec, header)
            if arrived is None:
                print(f"frame {i}: no TF within 10 s")
                continue
            if i >= 3:
                lat.append(arrived - sent)
            time.sleep(0.05)
        lat_ms = 1000.0 * np.asarray(lat)
        print(f"frame->TF latency over {len(lat)} frames: p50 {np.percentile(lat_ms, 50):.0f} ms"
              f"  p95 {np.percentile(lat_ms, 95):.0f} ms  (target p50 <= 200 ms)")
        diag = rec.get("diagnostics")[-1]
        values = rec.diag_values(diag)
        stages = {k: v for k, v in values.items() if k.startswith("latency_")}
        print("node stage latencies (ms):", stages)

        # 2. 30 Hz input.
        rec.clear()
        before = rec.diag_values(rec.wait_diag(lambda m: True))
        pid = node.proc.pid
        period = 1.0 / args.rate
        warmup = max(2.0, 0.1 * args.seconds)
        t0 = time.monotonic()
        n = 0
        rss_start = None
        rss_samples = []
        while time.monotonic() - t0 < args.seconds:
            rec.publish_frame(sc.frame.rgb, sc.depth_m, info)
            n += 1
            elapsed = time.monotonic() - t0
            if rss_start is None and elapsed >= warmup:
                rss_start = rss_mb(pid)
                tf_at_warmup = rec.count("tf")
                t_warm = time.monotonic()
            if n % int(args.rate) == 0:
                rss_samples.append(rss_mb(pid))
            time.sleep(max(0.0, t0 + n * period - time.monotonic()))
        duration = time.monotonic() - t0
        tf_total = rec.count("tf")
        processed_rate = (tf_total - tf_at_warmup) / (time.monotonic() - t_warm)
        time.sleep(1.5)
        after = rec.diag_values(rec.wait_diag(lambda m: True, start=rec.count("diagnostics")))
        rss_end = rss_mb(pid)
        delta = {k: int(after[k]) - int(before[k])
                 for k in ("frames_received", "frames_processed", "frames_dropped", "failures")}
        print(f"30 Hz input for {duration:.0f} s: published {n}, "
              f"received {delta['frames_received']}, processed {delta['frames_processed']} "
              f"({processed_rate:.2f} Hz after warm-up)"
              f", dropped {delta['frames_dropped']}, failures {delta['failures']}")
        print(f"node input rate {after['input_rate_hz']} Hz, processed rate "
              f"{after['processed_rate_hz']} Hz (diagnostics)")
        growth = 100.0 * (rss_end - rss_start) / rss_start
        print(f"node RSS: {rss_start:.0f} MB after {warmup:.0f} s warm-up -> {rss_end:.0f} MB at "
              f"the end ({growth:+.1f} %, target within 5 %); min/max sampled "
              f"{min(rss_samples):.0f}/{max(rss_samples):.0f} MB")
        rec.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
