"""TF poses of the node process against the ground truth of a synthetic 640×480 scene."""

from __future__ import annotations

import numpy as np
from node_harness import Recorder, box_prompt, camera_info, ros_context, running_node, scene

from sam3d_bench.metrics import gravity_box_centre

PREFIX = "obj_"


def test_tf_translations_match_the_truth():
    sc = scene(seed=1, width=640, height=480)
    params = {"tf_prefix": PREFIX, "camera_qos_reliability": "reliable"}
    with ros_context(), running_node(params) as node:
        rec = Recorder()
        try:
            assert rec.wait_subscribed(), node.log()
            rec.pub_prompt.publish(box_prompt(sc))
            # The prompt and the frames travel on different topics: re-publish the frame until
            # the node has applied the prompt (its object ids, not automatic segmentation's).
            want = sorted(f"{PREFIX}{o.object_id}" for o in sc.objects)
            tf = None
            for _ in range(10):
                header = rec.publish_frame(sc.frame.rgb, sc.depth_m, camera_info(sc.intrinsics))
                if not rec.wait(lambda h=header: any(
                        m.transforms and m.transforms[0].header.stamp == h.stamp
                        for m in rec.get("tf")), 15.0):
                    continue
                tf = next(m for m in rec.get("tf")
                          if m.transforms and m.transforms[0].header.stamp == header.stamp)
                if sorted(t.child_frame_id for t in tf.transforms) == want:
                    break
            assert tf is not None, node.log()[-3000:]
        finally:
            rec.close()
    got = {t.child_frame_id: t.transform.translation for t in tf.transforms}
    assert sorted(got) == [f"{PREFIX}{o.object_id}" for o in sc.objects]
    errors_cm = {}
    for gt in sc.objects:
        t = got[f"{PREFIX}{gt.object_id}"]
        # The embedded reconstructor's translation is the centre of the gravity-aligned oriented
        # box of the completed shape: compare with the same box of the ground-truth mesh.
        truth = gravity_box_centre(gt.mesh_vertices, sc.camera_pose)
        errors_cm[gt.object_id] = 100.0 * float(np.linalg.norm([t.x, t.y, t.z] - truth))
    # The hidden side is inferred: over many scenes the centre error is about 0.5 cm on
    # average with a few objects above 1 cm (benchmarks/README.md, bench_core). A broken chain
    # (frames, units, quaternion order, canonical vs camera frame) is off by decimetres.
    assert np.mean(list(errors_cm.values())) < 1.0, errors_cm
    assert max(errors_cm.values()) < 2.0, errors_cm
