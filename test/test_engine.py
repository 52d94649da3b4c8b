"""The pipeline engine (sam3d_ros.core.engine) with small fake backends."""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from sam3d_ros.core.engine import Engine, EngineResult, seed_everything
from sam3d_ros.core.errors import BackendError, Cancelled, InputError
from sam3d_ros.core.inputs import parse_request
from sam3d_ros.core.types import (
    Frame,
    Gaussians,
    Mesh,
    ObjectMask,
    ObjectReconstruction,
    SegmentationQuery,
)

W, H = 32, 24
RESULT_KEYS = {
    "gaussian_splat",
    "model_glb",
    "metadata",
    "individual_splats",
    "individual_glbs",
    "artifacts_zip",
}


def png_uri(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image():
    return np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8)


def request(**fields):
    return {"image_url": png_uri(image()), **fields}


class FakeSegmenter:
    name = "fake"
    reads_text = True

    def __init__(self, empty=False, fail=False):
        self.empty, self.fail, self.calls = empty, fail, []

    def segment(self, frame, query):
        self.calls.append(query)
        if self.fail:
            raise RuntimeError("boom")
        if self.empty:
            return []
        if query.masks:
            return [ObjectMask(i, m) for i, m in enumerate(query.masks)]
        out = []
        for obj in query.objects:
            mask = np.zeros((frame.height, frame.width), bool)
            for b in obj.boxes:
                mask[b.y_min : b.y_max + 1, b.x_min : b.x_max + 1] = True
            for p in obj.points:
                mask[max(p.y - 1, 0) : p.y + 2, max(p.x - 1, 0) : p.x + 2] |= p.label == 1
            out.append(ObjectMask(obj.object_id, mask))
        if not out:
            mask = np.zeros((frame.height, frame.width), bool)
            mask[4:12, 4:20] = True
            out.append(ObjectMask(0, mask, label=query.text or ""))
        return out


class FakeReconstructor:
    name = "fake"

    def __init__(self, drop=False):
        self.drop, self.seeds = drop, []

    def reconstruct(self, frame, masks, seed):
        self.seeds.append(seed)
        out = []
        for index, m in enumerate(masks):
            rng = np.random.default_rng([seed, m.object_id])
            n = 16
            corners = np.array(
                [[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)],
                np.float32,
            )
            faces = np.array(
                [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                 [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]],
                np.int32,
            )  # fmt: skip
            gaussians = Gaussians(
                means=rng.uniform(-0.4, 0.4, (n, 3)).astype(np.float32),
                scales=np.full((n, 3), 0.05, np.float32),
                rotations=np.tile(np.array([0, 0, 0, 1], np.float32), (n, 1)),
                colors=rng.uniform(0, 1, (n, 3)).astype(np.float32),
                opacities=np.full(n, 0.9, np.float32),
            )
            out.append(
                ObjectReconstruction(
                    object_id=m.object_id,
                    object_index=index,
                    mesh=Mesh(corners, faces, np.full((8, 3), 200, np.uint8)),
                    gaussians=gaussians,
                    rotation=np.array([0.0, 0.0, 0.0, 1.0]),
                    translation=np.array([0.0, 0.0, 1.0 + index]),
                    scale=np.array([0.1, 0.1, 0.1]),
                    region=m.region,
                )
            )
        return out[:-1] if self.drop else out


def engine(**kwargs):
    return Engine(FakeSegmenter(**kwargs), FakeReconstructor())


def test_run_writes_hosted_result(tmp_path):
    calls = []
    out = tmp_path / "run"
    res = engine().run(
        request(box_prompts=[{"x_min": 2, "y_min": 2, "x_max": 9, "y_max": 9}], seed=3),
        out,
        progress=lambda *a: calls.append(a),
    )
    assert isinstance(res, EngineResult)
    assert res.run_dir == out and res.seed == 3
    assert set(res.result) == RESULT_KEYS
    assert json.loads((out / "result.json").read_text()) == res.result
    assert [m["object_index"] for m in res.result["metadata"]] == [0]
    assert list(res.timings) == ["load", "segment", "reconstruct", "grasp", "export"]
    assert all(v >= 0 for v in res.timings.values())
    stages = [c[0] for c in calls]
    assert stages == ["load", "load", "segment", "segment", "reconstruct", "reconstruct",
                      "grasp", "grasp", "export", "export"]  # fmt: skip
    fractions = [c[1] for c in calls]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0


def test_run_without_output_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = engine().run(request(prompt="mug"))
    assert res.result is None and res.run_dir is None
    assert len(res.objects) == 1 and res.masks[0].label == "mug"
    assert "export" not in res.timings
    assert list(tmp_path.iterdir()) == []


def test_process_without_files():
    seg, rec = FakeSegmenter(), FakeReconstructor()
    frame = Frame(rgb=image())
    res = Engine(seg, rec).process(frame, SegmentationQuery(), seed=11)
    assert res.result is None and len(res.objects) == 1
    assert rec.seeds == [11]
    assert set(res.timings) == {"segment", "reconstruct", "grasp"}
    assert res.grasps is not None and len(res.grasps) == len(res.objects)


def test_default_seed_is_42():
    rec = FakeReconstructor()
    Engine(FakeSegmenter(), rec).run(request())
    assert rec.seeds == [42]


def test_seed_everything_is_reproducible():
    seed_everything(5)
    a = np.random.rand(3)
    seed_everything(5)
    np.testing.assert_array_equal(a, np.random.rand(3))


def test_parsed_request_accepted(tmp_path):
    parsed = parse_request(request())
    res = engine().run(parsed, tmp_path / "run")
    assert res.timings["load"] == 0.0 and (tmp_path / "run" / "result.json").is_file()


@pytest.mark.parametrize("stop_at", [1, 2, 3, 4])
def test_cancel_between_stages(tmp_path, stop_at):
    polls = []

    def cancel():
        polls.append(1)
        return len(polls) >= stop_at

    out = tmp_path / "run"
    with pytest.raises(Cancelled):
        engine().run(request(), out, cancel=cancel)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_output_dir_must_be_fresh(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    seg = FakeSegmenter()
    with pytest.raises(InputError) as excinfo:
        Engine(seg, FakeReconstructor()).run({"image_url": "missing.png"}, out)
    assert excinfo.value.field == "output_dir"
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and seg.calls == []


def test_empty_existing_output_dir_is_fine(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    engine().run(request(), out)
    assert (out / "result.json").is_file()


def test_bad_input_writes_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(InputError) as excinfo:
        engine().run(request(point_prompts=[{"x": 99, "y": 1}]), out)
    assert excinfo.value.field == "point_prompts[0].x"
    assert not out.exists()


@pytest.mark.parametrize(
    "fields, field",
    [
        ({}, "image_url"),
        ({"prompt": "mug"}, "prompt"),
        ({"box_prompts": [{"x_min": 1, "y_min": 1, "x_max": 2, "y_max": 2}]}, "box_prompts"),
        ({"point_prompts": [{"x": 1, "y": 1}]}, "point_prompts"),
    ],
)
def test_no_object_found(tmp_path, fields, field):
    with pytest.raises(InputError, match="no object") as excinfo:
        engine(empty=True).run(request(**fields), tmp_path / "run")
    assert excinfo.value.field == field
    assert not (tmp_path / "run").exists()


def test_backend_failure_is_backend_error(tmp_path):
    with pytest.raises(BackendError, match="segment failed: RuntimeError: boom"):
        engine(fail=True).run(request(), tmp_path / "run")
    assert not (tmp_path / "run").exists()


class RefusingSegmenter(FakeSegmenter):
    """Contract fake: refuses the prompts of the objects in ``refuse`` (as the embedded
    segmenter refuses a click on the table), segments the others as :class:`FakeSegmenter`."""

    def __init__(self, refuse):
        super().__init__()
        self.refuse = set(refuse)

    def segment(self, frame, query):
        out = []
        for m in super().segment(frame, query):
            if m.object_id in self.refuse:
                m = ObjectMask(m.object_id, np.zeros_like(m.mask),
                               refused=("point_prompts", f"object {m.object_id}: on the table"))
            out.append(m)
        return out


def test_a_refused_prompt_fails_its_object_alone(tmp_path):
    prompts = [{"x": 5 + 8 * i, "y": 10, "label": 1, "object_id": i} for i in (1, 2, 3)]
    rec = FakeReconstructor()
    out = Engine(RefusingSegmenter({2}), rec).run(request(point_prompts=prompts), tmp_path / "run")
    assert [o.object_id for o in out.objects] == [1, 3]
    assert [m.object_id for m in out.masks] == [1, 3]
    assert out.failed_objects == [{"object_id": 2, "stage": "segment",
                                   "reason": "object 2: on the table"}]
    assert [m["object_id"] for m in out.result["metadata"]] == [1, 3]
    # A refused prompt before one whose reconstruction fails: the failing one's field is its
    # prompts' (the request has no mask_urls; the reconstructor's field counts the masks it was
    # given), and the reason names the object.
    class NoDepthFor3(FakeReconstructor):
        def reconstruct(self, frame, masks, seed):
            for i, m in enumerate(masks):
                if m.object_id == 3:
                    raise InputError(f"mask_urls[{i}]", "object 3: no valid depth")
            return super().reconstruct(frame, masks, seed)

    two = [prompts[1], prompts[2]]
    with pytest.raises(InputError) as excinfo:
        Engine(RefusingSegmenter({2}), NoDepthFor3()).run(request(point_prompts=two))
    assert excinfo.value.field == "point_prompts" and "object 3" in excinfo.value.reason
    # Every prompt refused: the run fails on the first, naming its field; nothing written.
    with pytest.raises(InputError) as excinfo:
        Engine(RefusingSegmenter({1, 2, 3}), rec).run(request(point_prompts=prompts),
                                                       tmp_path / "none")
    assert excinfo.value.field == "point_prompts" and "object 1" in excinfo.value.reason
    assert not (tmp_path / "none").exists()


def test_a_failure_of_an_automatically_found_object_names_the_image():
    # No masks, no prompts: the request's field is the image (as when nothing is found), not a
    # mask or prompt the request never had.
    class NoDepth(FakeReconstructor):
        def reconstruct(self, frame, masks, seed):
            raise InputError("mask_urls[0]", "object 0: no valid depth")

    with pytest.raises(InputError) as excinfo:
        Engine(FakeSegmenter(), NoDepth()).run(request())
    assert excinfo.value.field == "image_url" and "object 0" in excinfo.value.reason


def test_reconstructor_must_return_one_object_per_mask():
    with pytest.raises(BackendError, match="returned 0 objects for 1 masks"):
        Engine(FakeSegmenter(), FakeReconstructor(drop=True)).run(request())


def test_backend_names_checked_eagerly_built_lazily():
    with pytest.raises(InputError) as excinfo:
        Engine("no-such-backend")
    assert excinfo.value.field == "segmentation_backend"
    with pytest.raises(InputError) as excinfo:
        Engine(FakeSegmenter(), "nope")
    assert excinfo.value.field == "reconstruction_backend"
    lazy = Engine("embedded", "embedded")
    with pytest.raises(InputError):
        lazy.run({"image_url": "missing.png"})
    assert lazy._segmenter == "embedded" and lazy._reconstructor == "embedded"


def test_same_seed_same_files(tmp_path):
    req = request(box_prompts=[{"x_min": 2, "y_min": 2, "x_max": 9, "y_max": 9}])
    first = engine().run(req, tmp_path / "run")
    (tmp_path / "run").rename(tmp_path / "first")
    second = engine().run(req, tmp_path / "run")
    assert first.result == second.result
    for name in ("result.json", "scene.glb", "scene.ply", "artifacts.zip", "metadata.json"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "run" / name).read_bytes()


# ----------------------------------------------------------------------- objects per request


def three_boxes():
    from sam3d_ros.core.types import BoxPrompt, ObjectPrompt

    return SegmentationQuery(objects=[
        ObjectPrompt(i, boxes=[BoxPrompt(2 + 8 * i, 2, 6 + 8 * i, 6, object_id=i)])
        for i in range(3)
    ])


def test_max_objects_bounds_queries_built_without_parse_request():
    # The node builds its queries itself (Prompt messages): the engine's cap applies to them.
    segmenter = FakeSegmenter()
    eng = Engine(segmenter, FakeReconstructor(), max_objects=2)
    assert eng.max_objects == 2 and eng.input_options.max_objects == 2
    frame = Frame(rgb=image())
    with pytest.raises(InputError, match="3 objects prompted; at most 2") as err:
        eng.process(frame, three_boxes())
    assert err.value.field == "box_prompts" and segmenter.calls == []
    with pytest.raises(InputError, match="3 masks; at most 2") as err:
        eng.process(frame, SegmentationQuery(masks=[np.ones((H, W), bool)] * 3))
    assert err.value.field == "mask_urls"
    with pytest.raises(InputError, match="must be at least 1"):
        Engine(segmenter, FakeReconstructor(), max_objects=0)


class ManyFound:
    """Contract fake: automatic segmentation that finds more objects than the cap."""

    name = "many"

    def segment(self, frame, query):
        masks = []
        for i, score in enumerate([0.2, 0.9, 0.5, 0.95, 0.1]):
            mask = np.zeros((frame.height, frame.width), bool)
            mask[2:6, 2 + 5 * i: 5 + 5 * i] = True
            masks.append(ObjectMask(i, mask, score=score))
        return masks


def test_automatic_segmentation_keeps_the_best_max_objects():
    eng = Engine(ManyFound(), FakeReconstructor(), max_objects=2, grasp_planner=None)
    res = eng.process(Frame(rgb=image()), SegmentationQuery())
    assert [m.object_id for m in res.masks] == [1, 3]  # the two best, in segmentation order
    assert [o.object_id for o in res.objects] == [1, 3]
    assert res.warnings == ["segmentation found 5 objects; kept the 2 highest-scoring "
                            "(max_objects)"]


def test_cancel_inside_a_backend_loop():
    """A stage that loops over objects ends at the next object when cancelled, not at its end:
    the embedded reconstructor calls check_cancelled() between objects."""
    from sam3d_bench.scenes import make_tabletop_scene
    from sam3d_ros.backends.embedded.reconstruction import EmbeddedReconstructor

    scene = make_tabletop_scene(1, n_objects=3, width=160, height=120)
    query = SegmentationQuery(masks=[o.visible_mask for o in scene.objects])
    polls = []

    def cancel():  # polled before segment, before reconstruct, then inside reconstruct
        polls.append(1)
        return len(polls) >= 3

    eng = Engine("embedded", EmbeddedReconstructor(), grasp_planner=None)
    with pytest.raises(Cancelled, match="before the end of the reconstruct stage"):
        eng.process(scene.frame, query, cancel=cancel)
    assert len(polls) == 3
