"""SAM 3 segmentation backend (``"sam3"``): Hugging Face transformers' SAM 3 classes.

Two models are read from ONE local checkpoint directory (a snapshot of the gated
``facebook/sam3`` repository on Hugging Face, a ``sam3_video`` checkpoint that holds both):

* **text** → ``Sam3Model`` + ``Sam3Processor`` (promptable concept segmentation): every instance
  of the phrase, with masks, boxes and scores above ``threshold``;
* **points / boxes** → ``Sam3TrackerModel`` + ``Sam3TrackerProcessor`` (promptable visual
  segmentation, the SAM 1/2 interactive path): ONE object per
  :class:`~sam3d_ros.core.types.ObjectPrompt` (all prompts sharing an ``object_id``), not "find
  everything similar to this box";
* **masks** pass through, validated.

Nothing is downloaded at run time: ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` are set and every
``from_pretrained`` call uses ``local_files_only=True``. torch and transformers are imported
inside methods, so importing this module needs neither.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import threading
from contextlib import nullcontext
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from sam3d_ros.backends.masks import pass_through_masks
from sam3d_ros.core.errors import BackendError, BackendUnavailableError, InputError
from sam3d_ros.core.types import Frame, ObjectMask, ObjectPrompt, SegmentationQuery

_LOG = logging.getLogger(__name__)

CHECKPOINT_ENV = "SAM3D_ROS_SAM3_CHECKPOINT"
"""Environment variable read when no ``checkpoint`` is given."""

HF_REPO = "facebook/sam3"

DOWNLOAD_HELP = (
    "The SAM 3 weights are gated: request access to '{repo}' on Hugging Face, then, on a "
    "machine with network access, run `hf auth login` and "
    "`hf download {repo} --local-dir <DIR>` (about 3.4 GB; it must contain config.json, "
    "model.safetensors, processor_config.json and the tokenizer files). Copy <DIR> to this "
    "machine and pass it as the 'checkpoint' option of the 'sam3' segmentation backend "
    "(ROS parameter / CLI option), or set ${env}. Nothing is downloaded at run time."
)

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_DTYPES = ("auto", "float32", "bfloat16", "float16")


def _download_help() -> str:
    return DOWNLOAD_HELP.format(repo=HF_REPO, env=CHECKPOINT_ENV)


def _set_offline() -> None:
    """Forbid hub access for everything this process loads from now on."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def release_gpu_memory() -> None:
    """Collect garbage and return cached CUDA blocks to the driver (no-op without CUDA)."""
    gc.collect()
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is there whenever a model was loaded
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a (CUDA) out-of-memory error."""
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    return "out of memory" in str(exc).lower()


class Sam3Segmenter:
    """SAM 3 through transformers (≥ 5): text, point/box and mask queries.

    Args:
        checkpoint: local directory of a ``facebook/sam3`` snapshot (default: ``$``
            :data:`CHECKPOINT_ENV`). Missing → :class:`BackendUnavailableError` on :meth:`load`.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.
        dtype: autocast precision on GPU: ``"auto"`` (bfloat16 where supported, else float16),
            ``"bfloat16"``, ``"float16"`` or ``"float32"``. The CPU always runs float32.
        threshold: text path: keep instances whose score (detection × presence probability)
            is at least this.
        mask_threshold: probability above which a pixel belongs to a text-path mask.
        max_objects: text path: keep at most this many instances (highest scores first).

    Raises:
        InputError: malformed ``device`` / ``dtype`` / threshold (at construction).
    """

    name = "sam3"
    reads_text = True

    def __init__(
        self,
        checkpoint: Optional[str] = None,
        device: str = "auto",
        dtype: str = "auto",
        threshold: float = 0.5,
        mask_threshold: float = 0.5,
        max_objects: int = 32,
    ):
        if checkpoint is None:
            checkpoint = os.environ.get(CHECKPOINT_ENV) or None
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        device = str(device).strip().lower()
        if not _DEVICE_RE.match(device):
            raise InputError(
                "device", f"expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}"
            )
        if dtype not in _DTYPES:
            raise InputError("dtype", f"expected one of {list(_DTYPES)}, got {dtype!r}")
        if not 0.0 <= float(threshold) <= 1.0:
            raise InputError("threshold", f"must lie in [0, 1], got {threshold}")
        if not 0.0 <= float(mask_threshold) <= 1.0:
            raise InputError("mask_threshold", f"must lie in [0, 1], got {mask_threshold}")
        if int(max_objects) < 1:
            raise InputError("max_objects", f"must be at least 1, got {max_objects}")
        self.device_request = device
        self.dtype_request = dtype
        self.threshold = float(threshold)
        self.mask_threshold = float(mask_threshold)
        self.max_objects = int(max_objects)
        self._lock = threading.RLock()
        self._device: Optional[str] = None
        self._detector: Any = None
        self._processor: Any = None
        self._tracker: Any = None
        self._tracker_processor: Any = None

    # ----------------------------------------------------------------------------------------
    # lifecycle
    # ----------------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """Whether the models are in memory."""
        return self._detector is not None

    @property
    def device(self) -> Optional[str]:
        """The torch device the models run on (``None`` before :meth:`load`)."""
        return self._device

    def check_checkpoint(self) -> Path:
        """Return the checkpoint directory, or raise saying what to download and where.

        Raises:
            BackendUnavailableError: no path given, or it lacks config / weights / processor.
        """
        if not self.checkpoint:
            raise BackendUnavailableError(f"no SAM 3 checkpoint configured. {_download_help()}")
        path = Path(self.checkpoint).expanduser()
        if not path.is_dir():
            raise BackendUnavailableError(
                f"SAM 3 checkpoint directory {str(path)!r} does not exist. {_download_help()}"
            )
        missing = []
        if not (path / "config.json").is_file():
            missing.append("config.json")
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            missing.append("model.safetensors")
        if not any((path / n).is_file() for n in ("processor_config.json",
                                                   "preprocessor_config.json")):
            missing.append("processor_config.json")
        if not any((path / n).is_file() for n in ("tokenizer.json", "vocab.json")):
            missing.append("tokenizer.json")
        if missing:
            raise BackendUnavailableError(
                f"SAM 3 checkpoint directory {str(path)!r} is incomplete (missing "
                f"{', '.join(missing)}). {_download_help()}"
            )
        return path

    def _resolve_device(self) -> str:
        import torch

        req = self.device_request
        if req == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if req.startswith("cuda"):
            if not torch.cuda.is_available():
                raise BackendUnavailableError(
                    f"device {req!r} requested for SAM 3 but CUDA is not available "
                    f"(torch {torch.__version__}); use device 'cpu' or 'auto'"
                )
            index = int(req.split(":")[1]) if ":" in req else 0
            if index >= torch.cuda.device_count():
                raise BackendUnavailableError(
                    f"device {req!r} requested but only {torch.cuda.device_count()} CUDA "
                    "device(s) exist"
                )
        return req

    def _autocast(self) -> Any:
        import torch

        if self._device is None or not self._device.startswith("cuda"):
            return nullcontext()
        dtype = self.dtype_request
        if dtype == "float32":
            return nullcontext()
        if dtype == "auto":
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return torch.autocast(device_type="cuda", dtype=getattr(torch, dtype))

    def load(self) -> None:
        """Load both models and processors onto the device (idempotent).

        Raises:
            BackendUnavailableError: checkpoint missing/incomplete, torch/transformers missing
                or too old, CUDA requested but absent, or the weights do not load.
        """
        with self._lock:
            if self.loaded:
                return
            path = self.check_checkpoint()
            _set_offline()
            try:
                import torch  # noqa: F401
                from transformers import (
                    Sam3Model,
                    Sam3Processor,
                    Sam3TrackerModel,
                    Sam3TrackerProcessor,
                )
            except ImportError as exc:
                raise BackendUnavailableError(
                    "the 'sam3' backend needs torch and transformers >= 5 with SAM 3 support "
                    f"(and torchvision): pip install -r requirements/models.txt ({exc})"
                ) from exc
            device = self._resolve_device()
            try:
                model_type = json.loads((path / "config.json").read_text()).get("model_type")
            except (OSError, ValueError) as exc:
                raise BackendUnavailableError(f"unreadable {path / 'config.json'}: {exc}") from exc
            try:
                detector = Sam3Model.from_pretrained(str(path), local_files_only=True)
                processor = Sam3Processor.from_pretrained(str(path), local_files_only=True)
                tracker = tracker_processor = None
                if model_type != "sam3":  # a detector-only checkpoint has no tracker weights
                    tracker = Sam3TrackerModel.from_pretrained(str(path), local_files_only=True)
                    tracker_processor = Sam3TrackerProcessor.from_pretrained(
                        str(path), local_files_only=True
                    )
                    tracker = tracker.to(device).eval()
                detector = detector.to(device).eval()
            except Exception as exc:  # noqa: BLE001 - report any loading failure the same way
                detector = tracker = None
                release_gpu_memory()
                raise BackendUnavailableError(
                    f"could not load SAM 3 from {str(path)!r}: {type(exc).__name__}: {exc}. "
                    f"{_download_help()}"
                ) from exc
            self._device = device
            self._detector, self._processor = detector, processor
            self._tracker, self._tracker_processor = tracker, tracker_processor
            _LOG.info("SAM 3 loaded from %s on %s", path, device)

    def unload(self) -> None:
        """Drop the models and free their (GPU) memory; :meth:`load` brings them back."""
        with self._lock:
            self._detector = self._processor = None
            self._tracker = self._tracker_processor = None
            self._device = None
            release_gpu_memory()

    # ----------------------------------------------------------------------------------------
    # SegmentationBackend
    # ----------------------------------------------------------------------------------------

    def segment(self, frame: Frame, query: SegmentationQuery) -> List[ObjectMask]:
        """Return one mask per object, in the hosted precedence order.

        Masks are validated and passed through; else each :class:`ObjectPrompt` gives exactly
        one object (its points and boxes refine it); else every instance of the text prompt;
        else the entire image is one object (hosted behaviour).

        Raises:
            InputError: invalid masks, prompts outside the image, an object with only
                background prompts.
            BackendUnavailableError: the model cannot be loaded (see :meth:`load`).
            BackendError: inference failed (e.g. GPU out of memory); memory is released and
                the backend stays usable.
        """
        if query.masks:
            return pass_through_masks(frame, query.masks)
        if query.objects:
            prompts = [self._check_prompt(frame, p) for p in query.objects]
            return self._guarded(lambda: self._segment_prompts(frame, prompts))
        if query.text and query.text.strip():
            text = query.text.strip()
            return self._guarded(lambda: self._segment_text(frame, text))
        return [ObjectMask(object_id=0, region=np.ones((frame.height, frame.width), bool))]

    def _guarded(self, func: Any) -> List[ObjectMask]:
        self.load()
        with self._lock:
            try:
                return func()
            except (InputError, BackendError, BackendUnavailableError):
                raise
            except Exception as exc:  # noqa: BLE001 - any inference failure → BackendError
                oom = is_out_of_memory(exc)
                release_gpu_memory()
                what = "ran out of GPU memory" if oom else f"failed: {type(exc).__name__}: {exc}"
                raise BackendError(f"SAM 3 segmentation {what}") from exc


    # ----------------------------------------------------------------------------------------
    # text: every instance
    # ----------------------------------------------------------------------------------------

    def _segment_text(self, frame: Frame, text: str) -> List[ObjectMask]:
        import torch

        rgb = np.ascontiguousarray(frame.rgb[:, :, :3], dtype=np.uint8)
        inputs = self._processor(images=rgb, text=text, return_tensors="pt").to(self._device)
        with torch.inference_mode(), self._autocast():
            outputs = self._detector(**inputs)
        _to_float32(outputs)
        results = self._processor.post_process_instance_segmentation(
            outputs,
            threshold=self.threshold,
            mask_threshold=self.mask_threshold,
            target_sizes=[(frame.height, frame.width)],
        )[0]
        scores = results["scores"].float().cpu().numpy()
        masks = results["masks"].cpu().numpy().astype(bool)
        order = np.argsort(-scores, kind="stable")[: self.max_objects]
        out = []
        for rank, i in enumerate(order):
            if not masks[i].any():
                continue
            out.append(ObjectMask(
                object_id=rank, region=masks[i], label=text, score=float(scores[i])
            ))
        return out

    # ----------------------------------------------------------------------------------------
    # points / boxes: one object per object_id
    # ----------------------------------------------------------------------------------------

    @staticmethod
    def _check_prompt(frame: Frame, prompt: ObjectPrompt) -> ObjectPrompt:
        w, h = frame.width, frame.height
        for p in prompt.points:
            if not (0 <= int(p.x) < w and 0 <= int(p.y) < h):
                raise InputError(
                    "point_prompts", f"point ({p.x}, {p.y}) lies outside the {w}×{h} image"
                )
        for b in prompt.boxes:
            x0, y0, x1, y1 = int(b.x_min), int(b.y_min), int(b.x_max), int(b.y_max)
            if x1 < x0 or y1 < y0:
                raise InputError("box_prompts", f"box {(x0, y0, x1, y1)} has max < min")
            if x1 < 0 or y1 < 0 or x0 >= w or y0 >= h:
                raise InputError(
                    "box_prompts", f"box {(x0, y0, x1, y1)} lies outside the {w}×{h} image"
                )
        positive_boxes = [b for b in prompt.boxes if int(getattr(b, "label", 1)) != 0]
        if not positive_boxes and not any(int(p.label) != 0 for p in prompt.points):
            raise InputError(
                "point_prompts" if prompt.points else "box_prompts",
                f"object {prompt.object_id} needs a foreground point or a box "
                "(only background prompts given)",
            )
        return prompt

    def _segment_prompts(self, frame: Frame, prompts: Sequence[ObjectPrompt]) -> List[ObjectMask]:
        import torch

        if self._tracker is None:
            raise BackendUnavailableError(
                f"the SAM 3 checkpoint {self.checkpoint!r} holds only the detector (text "
                f"prompts); point and box prompts need the full '{HF_REPO}' checkpoint"
            )
        rgb = np.ascontiguousarray(frame.rgb[:, :, :3], dtype=np.uint8)
        proc = self._tracker_processor
        image_inputs = proc(images=rgb, return_tensors="pt")
        original_sizes = image_inputs["original_sizes"]
        with torch.inference_mode(), self._autocast():
            embeddings = self._tracker.get_image_embeddings(
                image_inputs["pixel_values"].to(self._device)
            )
        out = []
        for prompt in prompts:
            points, labels, box = _prompt_arrays(prompt, frame.width, frame.height)
            kwargs = {}
            if points:
                kwargs["input_points"] = [[points]]
                kwargs["input_labels"] = [[labels]]
            if box is not None:
                kwargs["input_boxes"] = [[box]]
            enc = proc(original_sizes=original_sizes, return_tensors="pt", **kwargs)
            model_kwargs = {
                k: enc[k].to(self._device)
                for k in ("input_points", "input_labels", "input_boxes") if k in enc
            }
            # Ambiguity: one foreground click alone is ambiguous (part / whole), so ask for
            # the three candidate masks and keep the one with the best predicted IoU.
            multimask = box is None and len(points) == 1
            with torch.inference_mode(), self._autocast():
                result = self._tracker(
                    image_embeddings=embeddings, multimask_output=multimask, **model_kwargs
                )
            masks = proc.post_process_masks(result.pred_masks.float().cpu(), original_sizes)[0]
            # masks: (objects=1, candidates, H, W); iou_scores: (1, objects=1, candidates)
            ious = result.iou_scores.float().cpu().numpy().reshape(-1)
            best = int(np.argmax(ious))
            mask = masks.reshape(-1, frame.height, frame.width)[best].numpy().astype(bool)
            for b in prompt.boxes:  # negative boxes (label 0) carve their region out
                if int(getattr(b, "label", 1)) == 0:
                    mask[max(b.y_min, 0) : b.y_max + 1, max(b.x_min, 0) : b.x_max + 1] = False
            if not mask.any():
                _LOG.warning("SAM 3 returned an empty mask for object %s", prompt.object_id)
            out.append(ObjectMask(
                object_id=int(prompt.object_id), region=mask, score=float(ious[best])
            ))
        return out


def _prompt_arrays(
    prompt: ObjectPrompt, width: int, height: int
) -> Tuple[List[List[float]], List[int], Optional[List[float]]]:
    """Points, labels (1 fg / 0 bg) and one xyxy box (pixels) for one object.

    SAM takes a single box per object: several positive boxes of one ``object_id`` are
    combined into their enclosing box, clipped to the image. Corners are inclusive pixel
    indices, so the box spans to ``max + 1`` in SAM's continuous pixel coordinates.
    """
    points = [[float(p.x), float(p.y)] for p in prompt.points]
    labels = [1 if int(p.label) != 0 else 0 for p in prompt.points]
    boxes = [b for b in prompt.boxes if int(getattr(b, "label", 1)) != 0]
    box = None
    if boxes:
        x0 = max(min(int(b.x_min) for b in boxes), 0)
        y0 = max(min(int(b.y_min) for b in boxes), 0)
        x1 = min(max(int(b.x_max) for b in boxes) + 1, width)
        y1 = min(max(int(b.y_max) for b in boxes) + 1, height)
        box = [float(x0), float(y0), float(x1), float(y1)]
    return points, labels, box


def _to_float32(outputs: Any) -> None:
    """Cast the floating tensors of a model output to float32 in place (after autocast)."""
    import torch

    for key, value in list(outputs.items()):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            outputs[key] = value.float()
