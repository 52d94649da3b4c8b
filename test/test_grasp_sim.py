"""Grasps from the whole embedded pipeline, executed in the pybullet grasp simulation.

The first ten scenes of ``benchmarks/bench_grasp.py`` (seeds 0–9, three objects each): box
prompts → segmentation → reconstruction → analytic planner, each object's best grasps run in
a fresh copy of the scene (:mod:`sam3d_bench.grasp_sim`). The floors lie a little below
this commit's figures (0.93 / 0.97 → 0.85 / 0.93): the benchmark reports the
level, this catches a change that costs grasps (growing the mesh's rim out to the mask, which
raised the real frames' silhouette IoU by 0.01, fell to 0.83 / 0.87 here).
"""

from __future__ import annotations

import pytest

pytest.importorskip("pybullet")

from sam3d_bench.grasp_sim import rate, run_scenes  # noqa: E402


def test_pipeline_grasps_lift_the_objects():
    rows, _ = run_scenes(range(10), n_objects=3, methods=("pipeline",))
    assert len(rows) == 30
    top1, top5 = rate(rows, "pipeline", "top1"), rate(rows, "pipeline", "topk")
    failed = [(r["seed"], r["urdf_id"], r["n_pipeline"]) for r in rows
              if not r["pipeline"]["topk"]]
    assert top1 >= 0.85 and top5 >= 0.93, (top1, top5, failed)


def test_an_attempt_does_not_depend_on_the_attempts_before_it():
    """Each attempt runs in a world built afresh: the same grasp ends with the object at the
    same place, to the bit, whatever ran before it (pybullet's restoreState kept solver and
    contact caches, and the naive baseline's outcomes depended on the pipeline's attempts)."""
    from sam3d_bench.grasp_sim import GraspSim, naive_grasp
    from sam3d_bench.scenes import make_tabletop_scene
    from sam3d_ros.backends import make_grasp_planner, make_reconstructor, make_segmenter

    scene = make_tabletop_scene(0, n_objects=3)
    planner = make_grasp_planner("analytic")
    masks = make_segmenter("embedded").segment(scene.frame, scene.box_query())
    objects = make_reconstructor("embedded").reconstruct(scene.frame, masks, 0)
    grasps = planner.plan(scene.frame, objects, 0)
    naive = [naive_grasp(scene, o.mask, planner.gripper) for o in objects]
    assert all(g is not None for g in naive)

    def final_poses(sim, before_each):
        out = []
        for i, grasp in enumerate(naive):
            for j, g in before_each:
                sim.attempt(j, g)
            ok = sim.attempt(i, grasp)
            pos, orn = sim.pb.getBasePositionAndOrientation(sim.bodies[i],
                                                            physicsClientId=sim.client)
            out.append((ok, tuple(pos), tuple(orn)))
        return out

    sim = GraspSim(scene, planner.gripper)
    try:
        plain = final_poses(sim, [])
        after_pipeline = final_poses(sim, [(j, gs[0]) for j, gs in enumerate(grasps) if gs])
    finally:
        sim.close()
    assert plain == after_pipeline


def test_household_objects_are_picked_in_the_simulation():
    """The household set runs through the simulation: its objects load from their URDFs at
    their true poses, and the planner's grasps on the true meshes lift them."""
    rows, _ = run_scenes([0], n_objects=3, methods=("true_mesh",), object_set="household")
    assert len(rows) == 3 and all(r["urdf_id"] >= 1000 for r in rows)
    assert rate(rows, "true_mesh", "topk") == 1.0, rows
