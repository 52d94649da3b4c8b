"""Sam3Segmenter end to end on a TINY, randomly initialised SAM 3 built offline on the CPU.

The checkpoint is written the way the real ``facebook/sam3`` snapshot is laid out (one
``sam3_video`` config holding the detector and the tracker, ``model.safetensors`` with
``detector_model.*`` / ``tracker_model.*`` / ``tracker_neck.*`` keys, processor config and a
tokenizer) and loaded through the adapter's ``checkpoint`` path, so the loading code is the real
one. A tiny byte-level CLIP vocabulary is built locally; nothing is downloaded.

Random weights give meaningless masks: these tests check plumbing (shapes, ids, prompt routing,
equality with a direct transformers call, errors, recovery), not segmentation quality.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from sam3d_ros.core.errors import BackendError, BackendUnavailableError, InputError
from sam3d_ros.core.types import BoxPrompt, Frame, ObjectPrompt, PointPrompt, SegmentationQuery

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

torch = pytest.importorskip("torch")


def _import_torchvision():
    """Import torchvision, working around this machine's wheel (ENVIRONMENT WORKAROUND).

    The only torchvision matching torch 2.13 here is the CUDA build: its C++ ops cannot load on
    the CPU torch wheel, and torchvision 0.28 then fails at import while registering fake
    kernels for ``torchvision::nms`` / ``qnms``. transformers' SAM 3 image processor needs only
    torchvision's pure-Python transforms, so when the ops are missing we declare the two op
    schemas (no kernels) before importing. With a working torchvision this does nothing.
    """
    try:
        import torchvision  # noqa: F401

        return
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        try:
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        except RuntimeError:  # already declared
            pass
    _import_torchvision.lib = lib  # keep the library alive
    import torchvision  # noqa: F401,F811


_import_torchvision()
transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "Sam3TrackerModel"):
    pytest.skip("transformers without SAM 3 (needs >= 5)", allow_module_level=True)

from sam3d_ros.backends import make_segmenter  # noqa: E402
from sam3d_ros.backends.sam3.segmentation import Sam3Segmenter  # noqa: E402

IMG = 112  # model input side (14-pixel patches → 8×8 grid)
H, W = 48, 64  # camera image


def _tiny_tokenizer():
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {}
    chars = list(bytes_to_unicode().values())
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def _tiny_video_config():
    from transformers import Sam3Config, Sam3VideoConfig, Sam3VisionConfig, Sam3ViTConfig

    def vision():
        return Sam3VisionConfig(
            backbone_config=Sam3ViTConfig(
                hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, image_size=IMG, patch_size=14, window_size=4,
                global_attn_indexes=[1],
            ),
            fpn_hidden_size=32,
            scale_factors=[4.0, 2.0, 1.0],
            backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]],
        )

    small = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64)
    detector = Sam3Config(
        vision_config=vision(),
        text_config=dict(
            vocab_size=600, hidden_size=32, intermediate_size=64, projection_dim=32,
            num_hidden_layers=1, num_attention_heads=4, max_position_embeddings=32,
            hidden_act="gelu", bos_token_id=512, eos_token_id=513, pad_token_id=513,
        ),
        geometry_encoder_config=dict(num_layers=1, **small),
        detr_encoder_config=dict(num_layers=1, **small),
        detr_decoder_config=dict(num_layers=1, num_queries=5, **small),
        mask_decoder_config=dict(hidden_size=32, num_upsampling_stages=2),
    )
    tracker = dict(
        vision_config=vision().to_dict(),
        image_size=IMG,
        prompt_encoder_config=dict(hidden_size=32, image_size=IMG, patch_size=14),
        mask_decoder_config=dict(
            hidden_size=32, mlp_dim=64, num_attention_heads=4, iou_head_hidden_dim=32
        ),
        memory_attention_rope_feat_sizes=[8, 8], memory_attention_hidden_size=32,
        memory_attention_feed_forward_hidden_size=64, memory_attention_num_layers=1,
        memory_encoder_hidden_size=32, memory_encoder_output_channels=16,
        mask_downsampler_embed_dim=32, memory_fuser_embed_dim=32,
        memory_fuser_intermediate_dim=64, memory_fuser_num_layers=1,
    )
    return Sam3VideoConfig(detector_config=detector, tracker_config=tracker)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random SAM 3 checkpoint directory laid out like the facebook/sam3 snapshot."""
    from safetensors.torch import save_file
    from transformers import Sam3ImageProcessor, Sam3Processor, Sam3VideoModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam3_tiny")
    model = Sam3VideoModel(_tiny_video_config())
    model.config.save_pretrained(path)
    # state_dict() keys (detector_model.*, tracker_model.*, tracker_neck.*) are the layout of the
    # published checkpoint. save_pretrained() is not used for the weights: transformers 5.23
    # re-applies the tracker's key mapping on save and writes "tracker_model.tracker_model.*".
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(path / "model.safetensors"),
    )
    processor = Sam3Processor(
        image_processor=Sam3ImageProcessor(
            size={"height": IMG, "width": IMG}, mask_size={"height": 32, "width": 32}
        ),
        tokenizer=_tiny_tokenizer(),
    )
    processor.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def segmenter(checkpoint):
    seg = Sam3Segmenter(checkpoint=checkpoint, device="cpu", threshold=0.0)
    seg.load()
    yield seg
    seg.unload()


@pytest.fixture
def frame():
    rng = np.random.default_rng(1)
    return Frame(rgb=rng.integers(0, 255, (H, W, 3), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------
# no heavy imports / errors before loading
# ---------------------------------------------------------------------------------------------


def test_module_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "import sam3d_ros.backends.sam3.segmentation as m\n"
        "s = m.Sam3Segmenter(checkpoint='/nonexistent')\n"
        "assert s.name == 'sam3' and s.reads_text and not s.loaded\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("checkpoint_arg", [None, "/nonexistent/sam3"])
def test_missing_checkpoint_says_what_to_download(checkpoint_arg, monkeypatch):
    monkeypatch.delenv("SAM3D_ROS_SAM3_CHECKPOINT", raising=False)
    seg = Sam3Segmenter(checkpoint=checkpoint_arg, device="cpu")
    with pytest.raises(BackendUnavailableError) as err:
        seg.load()
    message = str(err.value)
    assert "facebook/sam3" in message and "gated" in message
    assert "hf download" in message and "checkpoint" in message
    assert "SAM3D_ROS_SAM3_CHECKPOINT" in message


def test_incomplete_checkpoint_names_missing_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    seg = Sam3Segmenter(checkpoint=str(tmp_path), device="cpu")
    with pytest.raises(BackendUnavailableError, match="model.safetensors"):
        seg.segment(Frame(rgb=np.zeros((4, 4, 3), np.uint8)), SegmentationQuery(text="cup"))


def test_checkpoint_from_environment(monkeypatch, checkpoint):
    monkeypatch.setenv("SAM3D_ROS_SAM3_CHECKPOINT", checkpoint)
    assert Sam3Segmenter().checkpoint == checkpoint


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "", "gpu0"])
def test_bad_device_is_an_input_error(device):
    with pytest.raises(InputError) as err:
        Sam3Segmenter(checkpoint="/x", device=device)
    assert err.value.field == "device"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_requested_without_cuda(checkpoint):
    seg = Sam3Segmenter(checkpoint=checkpoint, device="cuda")
    with pytest.raises(BackendUnavailableError, match="CUDA is not available"):
        seg.load()
    assert not seg.loaded


def test_bad_threshold_and_dtype():
    with pytest.raises(InputError):
        Sam3Segmenter(checkpoint="/x", threshold=1.5)
    with pytest.raises(InputError):
        Sam3Segmenter(checkpoint="/x", dtype="int8")


def test_offline_environment_set(segmenter):
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert segmenter.device == "cpu"


# ---------------------------------------------------------------------------------------------
# point / box prompts: one object per object_id
# ---------------------------------------------------------------------------------------------


def test_point_prompts_one_mask_per_object_id(segmenter, frame):
    query = SegmentationQuery(objects=[
        ObjectPrompt(object_id=7, points=[PointPrompt(10, 20, 1, 7)]),
        ObjectPrompt(object_id=3, points=[PointPrompt(40, 30, 1, 3), PointPrompt(5, 5, 0, 3)]),
    ])
    masks = segmenter.segment(frame, query)
    assert [m.object_id for m in masks] == [7, 3]
    for m in masks:
        assert m.mask.shape == (H, W) and m.mask.dtype == bool
        assert np.isfinite(m.score)


def test_box_prompts_one_mask_per_object_id(segmenter, frame):
    query = SegmentationQuery(objects=[
        ObjectPrompt(object_id=0,
                     boxes=[BoxPrompt(2, 3, 30, 40, 0), BoxPrompt(10, 10, 35, 44, 0)]),
        ObjectPrompt(object_id=1, boxes=[BoxPrompt(40, 5, 60, 30, 1)],
                     points=[PointPrompt(50, 20, 1, 1)]),
    ])
    masks = segmenter.segment(frame, query)
    assert [m.object_id for m in masks] == [0, 1]
    assert all(m.mask.shape == (H, W) for m in masks)


_DIRECT = {}


def _direct_tracker_mask(checkpoint, rgb, **prompt):
    """The documented transformers usage, for comparison with the adapter."""
    from transformers import Sam3TrackerModel, Sam3TrackerProcessor

    if checkpoint not in _DIRECT:
        _DIRECT[checkpoint] = (
            Sam3TrackerModel.from_pretrained(checkpoint, local_files_only=True).eval(),
            Sam3TrackerProcessor.from_pretrained(checkpoint, local_files_only=True),
        )
    model, proc = _DIRECT[checkpoint]
    inputs = proc(images=rgb, return_tensors="pt", **prompt)
    multimask = "input_boxes" not in prompt and len(prompt["input_points"][0][0]) == 1
    with torch.no_grad():
        out = model(**inputs, multimask_output=multimask)
    masks = proc.post_process_masks(out.pred_masks, inputs["original_sizes"])[0]
    best = int(out.iou_scores.reshape(-1).argmax())
    return masks.reshape(-1, rgb.shape[0], rgb.shape[1])[best].numpy()


def test_prompts_match_a_direct_transformers_call(segmenter, checkpoint, frame):
    """Coordinates, labels, box corners and mask choice reach SAM 3 as documented."""
    got = segmenter.segment(frame, SegmentationQuery(objects=[
        ObjectPrompt(0, points=[PointPrompt(12, 30, 1)]),
        ObjectPrompt(1, points=[PointPrompt(12, 30, 1), PointPrompt(50, 8, 0)]),
        ObjectPrompt(2, boxes=[BoxPrompt(5, 6, 29, 39)]),
    ]))
    want = [
        _direct_tracker_mask(checkpoint, frame.rgb, input_points=[[[[12, 30]]]],
                             input_labels=[[[1]]]),
        _direct_tracker_mask(checkpoint, frame.rgb, input_points=[[[[12, 30], [50, 8]]]],
                             input_labels=[[[1, 0]]]),
        _direct_tracker_mask(checkpoint, frame.rgb, input_boxes=[[[5, 6, 30, 40]]]),
    ]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.mask, w)
    assert not np.array_equal(want[0], want[2])  # the prompt changes the answer


def test_negative_box_carves_region(segmenter, frame):
    query = SegmentationQuery(objects=[ObjectPrompt(0, boxes=[BoxPrompt(0, 0, W - 1, H - 1)])])
    full = segmenter.segment(frame, query)[0].mask
    neg = BoxPrompt(0, 0, 20, 20)
    object.__setattr__(neg, "label", 0)  # hosted boxes may carry a label
    query.objects[0].boxes.append(neg)
    carved = segmenter.segment(frame, query)[0].mask
    assert not carved[:21, :21].any()
    np.testing.assert_array_equal(carved[21:, 21:], full[21:, 21:])


@pytest.mark.parametrize("prompt, field", [
    (ObjectPrompt(0, points=[PointPrompt(W, 3)]), "point_prompts"),
    (ObjectPrompt(0, boxes=[BoxPrompt(W + 1, 0, W + 5, 5)]), "box_prompts"),
    (ObjectPrompt(0, points=[PointPrompt(3, 3, 0)]), "point_prompts"),
])
def test_bad_prompts_are_input_errors(segmenter, frame, prompt, field):
    with pytest.raises(InputError) as err:
        segmenter.segment(frame, SegmentationQuery(objects=[prompt]))
    assert err.value.field == field


# ---------------------------------------------------------------------------------------------
# text: every instance
# ---------------------------------------------------------------------------------------------


def test_text_prompt_returns_instances(segmenter, frame, monkeypatch):
    monkeypatch.setattr(segmenter, "mask_threshold", 0.01)
    masks = segmenter.segment(frame, SegmentationQuery(text="red mug"))
    assert 1 <= len(masks) <= 5  # at most the tiny model's 5 queries
    assert [m.object_id for m in masks] == list(range(len(masks)))
    scores = [m.score for m in masks]
    assert scores == sorted(scores, reverse=True)
    for m in masks:
        assert m.mask.shape == (H, W) and m.mask.dtype == bool and m.mask.any()
        assert m.label == "red mug" and 0.0 <= m.score <= 1.0


def test_text_threshold_filters(segmenter, frame, monkeypatch):
    monkeypatch.setattr(segmenter, "threshold", 1.0)
    assert segmenter.segment(frame, SegmentationQuery(text="mug")) == []


def test_text_max_objects(segmenter, frame, monkeypatch):
    monkeypatch.setattr(segmenter, "mask_threshold", 0.01)
    monkeypatch.setattr(segmenter, "max_objects", 2)
    assert len(segmenter.segment(frame, SegmentationQuery(text="mug"))) == 2


# ---------------------------------------------------------------------------------------------
# masks, empty query, registry, lifecycle, failures
# ---------------------------------------------------------------------------------------------


def test_masks_pass_through_validated(segmenter, frame):
    m = np.zeros((H, W), np.uint8)
    m[5:9, 5:9] = 255
    out = segmenter.segment(frame, SegmentationQuery(masks=[m], text="ignored"))
    assert len(out) == 1 and out[0].mask.sum() == 16 and out[0].mask.dtype == bool
    with pytest.raises(InputError) as err:
        segmenter.segment(frame, SegmentationQuery(masks=[m, np.zeros((H, W))]))
    assert err.value.field == "mask_urls[1]"
    with pytest.raises(InputError):
        segmenter.segment(frame, SegmentationQuery(masks=[np.ones((H, W + 1))]))


def test_no_prompt_is_the_whole_image(segmenter, frame):
    out = segmenter.segment(frame, SegmentationQuery())
    assert len(out) == 1 and out[0].mask.all()


def test_registry_builds_it(checkpoint):
    seg = make_segmenter("sam3", checkpoint=checkpoint, device="cpu")
    assert isinstance(seg, Sam3Segmenter) and not seg.loaded


def test_unload_then_segment_reloads(checkpoint, frame):
    seg = Sam3Segmenter(checkpoint=checkpoint, device="cpu")
    seg.load()
    assert seg.loaded
    seg.unload()
    assert not seg.loaded and seg.device is None
    query = SegmentationQuery(objects=[ObjectPrompt(0, points=[PointPrompt(3, 3)])])
    assert len(seg.segment(frame, query)) == 1 and seg.loaded


def test_failure_mid_run_is_backend_error_and_recovers(segmenter, frame, monkeypatch):
    seg = segmenter
    calls = {"n": 0}
    real_forward = seg._tracker.forward

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(seg._tracker, "forward", flaky)
    query = SegmentationQuery(objects=[
        ObjectPrompt(0, points=[PointPrompt(3, 3)]), ObjectPrompt(1, points=[PointPrompt(9, 9)])
    ])
    with pytest.raises(BackendError, match="out of GPU memory"):
        seg.segment(frame, query)
    assert len(seg.segment(frame, query)) == 2  # usable again


def test_engine_drives_the_adapter(segmenter, frame):
    engine_mod = pytest.importorskip("sam3d_ros.core.engine")
    from sam3d_ros.core.types import Gaussians, Mesh, ObjectReconstruction

    class RecordingReconstructor:
        """Minimal ReconstructionBackend: records the masks the engine hands over."""

        name = "recording"

        def __init__(self):
            self.masks = None

        def reconstruct(self, frame, masks, seed):
            self.masks = list(masks)
            empty = Gaussians(*(np.zeros((0, n), np.float32) for n in (3, 3, 4, 3)),
                              np.zeros(0, np.float32))
            mesh = Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32),
                        np.zeros((0, 3), np.uint8))
            return [ObjectReconstruction(m.object_id, i, mesh, empty, np.array([0, 0, 0, 1.0]),
                                         np.zeros(3), np.ones(3), m.mask)
                    for i, m in enumerate(masks)]

    rec = RecordingReconstructor()
    engine = engine_mod.Engine(segmenter=segmenter, reconstructor=rec)
    query = SegmentationQuery(objects=[
        ObjectPrompt(4, points=[PointPrompt(10, 10)]),
        ObjectPrompt(9, boxes=[BoxPrompt(1, 1, 30, 30)]),
    ])
    result = engine.process(frame, query, seed=3)
    assert [m.object_id for m in rec.masks] == [4, 9]
    assert [o.object_id for o in result.objects] == [4, 9]
    assert all(m.mask.shape == (H, W) for m in rec.masks)
    assert "segment" in result.timings
