"""One prompted object without valid depth no longer fails the node's frame: the others are
published and the refused one is named in the log (issue 10, path 20), over real DDS."""

from __future__ import annotations

import json

from node_harness import Recorder, box_prompt, camera_info, ros_context, running_node, scene


def test_object_without_depth_is_skipped_and_the_others_published(tmp_path):
    full = scene(seed=1)
    prompt = box_prompt(full)
    ids = [b.object_id for b in prompt.boxes]
    hole = prompt.boxes[1]  # this object's depth is missing (e.g. a black, shiny surface)
    depth = full.depth_m.copy()
    depth[hole.y_min: hole.y_max + 1, hole.x_min: hole.x_max + 1] = 0.0
    params = {"sync_slop_s": 0.01, "camera_qos_reliability": "reliable",
              "write_artifacts": True, "output_dir": str(tmp_path)}
    with ros_context(), running_node(params) as node:
        rec = Recorder()
        try:
            assert rec.wait_subscribed(), node.log()
            rec.pub_prompt.publish(prompt)
            assert node.wait_for_line("prompt: ", 10.0), node.log()
            header = rec.publish_frame(full.frame.rgb, depth, camera_info(full.intrinsics))

            def published():
                return [m for m in rec.get("objects") if m.header.stamp == header.stamp]

            assert rec.wait(lambda: bool(published()), 30.0), node.log()
            got = sorted(o.id for o in published()[0].objects)
            assert got == sorted(i for i in ids if i != hole.object_id), node.log()
            assert node.wait_for_line(f"object {hole.object_id} skipped: ", 5.0), node.log()
            # The frame's run directory names it too, as the CLI's does.
            (run,) = [d for d in tmp_path.iterdir() if d.name.startswith("frame_")]
            metadata = json.loads((run / "metadata.json").read_text())
            (failed,) = metadata["failed_objects"]
            assert failed["object_id"] == hole.object_id and "depth" in failed["reason"]
            # Nothing in its box has depth: the segmentation finds no object there.
            assert failed["stage"] == "segment" and "inside the box" in failed["reason"]
        finally:
            rec.close()
