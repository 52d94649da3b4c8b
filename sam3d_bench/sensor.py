"""Depth sensor noise model for synthetic RGB-D frames.

The model follows the structured-light / active-stereo characterisation of Nguyen, Izadi and
Lovell (2012, "Modeling Kinect sensor noise for improved 3D reconstruction and tracking"):

* axial (along-ray) Gaussian noise whose standard deviation grows with range,
  ``sigma(z) = sigma_0 + k * (z - z_0)^2`` (defaults 1.2 mm + 1.9 mm/m^2 * (z - 0.4 m)^2);
* lateral noise: each pixel reports the depth seen ``round(N(0, sigma_lateral))`` pixels away
  (jagged object outlines, as the lateral noise of the same paper);
* flying (mixed) pixels: some pixels on depth edges report a depth between the two surfaces;
* quantisation of the reported depth (default 1 mm, like a uint16 millimetre image);
* dropouts: pixels next to depth discontinuities are invalid with a high probability (shadowing
  of the projector / stereo occlusion), plus a small uniform random dropout rate;
* no return outside the working range ``[min_range, max_range]``;
* Gaussian noise on the colour image (``rgb_sigma`` 8-bit levels).

Realistic active-stereo (RealSense D4xx) effects, all off in the default :class:`SensorNoise` so
the figures measured with it stay reproducible, on in :meth:`SensorNoise.realsense` with values
measured on real frames by ``benchmarks/measure_real_sensor.py``:

* stereo occlusion shadows: background pixels the second imager (``stereo_baseline`` to the right)
  cannot see are invalid, a hole band left of every foreground edge;
* foreground fattening and mixed pixels: near surfaces grow ``fattening_px`` onto the far side,
  and pixels within ``edge_mix_px`` of a depth jump report the window mean across it (the
  stereo matcher's window straddles the edge) with probability ``edge_mix``;
* dropouts on dark (and, optionally, saturated) surfaces, as a function of the colour image's
  luminance, in blobs rather than single pixels;
* disparity quantisation: depth levels ``z_quant_per_m * z^2`` apart (a fixed disparity step);
* colour–depth misregistration: the finished depth image is shifted by ``misregistration_px`` in
  a direction drawn per frame, so a colour mask's edge pixels carry background depth.

Prompt noise (imperfect masks and boxes given to the segmenter) is :class:`PromptNoise`.

Everything is deterministic given the random generator (a seed or ``numpy.random.Generator``).
Invalid pixels are ``NaN``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:
    from sam3d_bench.scenes import SyntheticScene
    from sam3d_ros.core.types import SegmentationQuery

SeedLike = Union[int, np.random.Generator, None]


@dataclass(frozen=True)
class SensorNoise:
    """Parameters of the depth noise model (metres, probabilities in [0, 1])."""

    sigma_0: float = 0.0012
    """Axial noise standard deviation at ``z_0``."""
    sigma_k: float = 0.0019
    """Quadratic growth of the axial standard deviation, m / m^2."""
    z_0: float = 0.4
    """Range of minimal noise."""
    sigma_lateral_px: float = 0.5
    """Lateral noise standard deviation, pixels (0 disables)."""
    flying_pixel: float = 0.1
    """Probability that a surviving edge pixel mixes the near and far depths."""
    quantisation: float = 0.001
    """Depth quantisation step (0 disables)."""
    edge_threshold: float = 0.02
    """A pixel is on a depth edge when a 4-neighbour differs by more than this (metres)..."""
    edge_relative: float = 0.02
    """...or by more than this fraction of its depth, whichever is larger."""
    edge_width: int = 1
    """Dilation (pixels) of the edge band."""
    edge_dropout: float = 0.5
    """Probability that a pixel in the edge band is invalid."""
    random_dropout: float = 0.003
    """Probability that any other pixel is invalid."""
    min_range: float = 0.2
    max_range: float = 3.0
    rgb_sigma: float = 2.0
    """Colour image noise standard deviation, 8-bit levels (0 disables)."""
    # Realistic active-stereo effects (0 = off; see the module docstring and realsense()).
    stereo_baseline: float = 0.0
    """Baseline (m) to the second imager, to the right: pixels it cannot see are invalid."""
    fattening_px: int = 0
    """Near surfaces grow this many pixels onto the far side of a depth jump."""
    edge_mix_px: int = 0
    """Half-width (pixels) of the band around depth jumps whose pixels may be mixed..."""
    edge_mix: float = 0.0
    """...with this probability: they report the mean valid depth of a (2k+1)^2 window."""
    dark_dropout: float = 0.0
    """Dropout probability on black pixels, falling linearly to 0 at luminance ``dark_luma``."""
    dark_luma: float = 48.0
    """Luminance (0-255, Rec. 601) from which on dark-surface dropouts stop."""
    saturated_dropout: float = 0.0
    """Dropout probability on saturated pixels (a channel >= 250, luminance >= 200)."""
    dropout_blob_px: float = 0.0
    """Spatial correlation (Gaussian sigma, pixels) of dark/saturated dropouts (0: per pixel)."""
    z_quant_per_m: float = 0.0
    """Disparity quantisation: reported depths are ``z_quant_per_m * z^2`` apart (1/m)."""
    misregistration_px: float = 0.0
    """Colour-depth misregistration: the depth image is shifted by this many pixels (rounded
    per axis) in a direction drawn per frame."""

    def sigma(self, z: np.ndarray) -> np.ndarray:
        """Axial noise standard deviation (metres) at depth ``z`` (metres)."""
        z = np.asarray(z, dtype=np.float64)
        return self.sigma_0 + self.sigma_k * (z - self.z_0) ** 2

    @property
    def realistic(self) -> bool:
        """Whether any of the active-stereo effects is on."""
        return any(
            getattr(self, name) > 0
            for name in ("stereo_baseline", "fattening_px", "edge_mix", "dark_dropout",
                         "saturated_dropout", "z_quant_per_m", "misregistration_px")
        )

    @classmethod
    def realsense(cls, **overrides) -> "SensorNoise":
        """A RealSense D4xx-like sensor, measured on real frames (``../shared/real_rgbd``).

        ``python benchmarks/measure_real_sensor.py`` (commit and figures: ``benchmarks/README.md``,
        section "Realistic sensor"), on 20 frames (6dof-graspnet, M2T2, UnseenObjectClustering,
        GraspNet; D415/D435 class):

        * disparity quantisation: gaps between reported depths ``0.0016 z^2`` (D435 frames;
          0.00097 on the D415 ones) -> ``z_quant_per_m``;
        * stereo shadows: 63 % of the hole runs between two surfaces have the far one on the left
          (81 % on the UCN frames), their widths imply a 0.068 m baseline -> ``stereo_baseline``;
        * holes 4.4 % overall, 11.7 % on pixels darker than luminance 32, 4.3 % at 32-64, 3.1 %
          at 64-128; saturated pixels 1.4 % (no excess: ``saturated_dropout`` 0) ->
          ``dark_dropout`` with a ramp to ``dark_luma`` 48;
        * 47 % of the valid pixels midway across a > 8 cm depth jump lie between its two sides
          (mixed) -> ``edge_mix``; 22 % of the valid pixels 1-3 px inside the colour-drawn (M2T2)
          masks lie > 2 cm + 2 % behind the object's interior, 8.9 % are holes -> the lower
          ``edge_dropout``; those masks match the depth silhouette best when shifted by 2.9 px
          (median of 12 masks, spread 1-7 px, at 640 px width) -> ``misregistration_px`` 2, on
          the low side (the same estimate reads 2.2 px on scenes with this preset).

        The same script on 5 robot-head scenes with this preset (``--synthetic 5``): dark holes
        11.1 %, far side left 72 %, baseline 0.052 m, mixed 57 %, ring far 17 % / holes 13 %,
        mask shift 2.2 px, ``0.00161 z^2`` (the default sensor: ring far 6 %, shift 0, mixed
        31 %, far left 48 %).
        The axial noise, lateral jitter and flying pixels of :class:`SensorNoise` are kept.
        """
        return replace(cls(), **{**REALSENSE_D4XX, **overrides})


def depth_edges(depth: np.ndarray, threshold: float, relative: float, width: int) -> np.ndarray:
    """Return a bool mask of pixels adjacent to a depth discontinuity (NaN counts as far)."""
    z = np.where(np.isfinite(depth), depth, np.inf)
    edges = np.zeros(depth.shape, dtype=bool)
    for axis in (0, 1):
        a = np.take(z, np.arange(z.shape[axis] - 1), axis=axis)
        b = np.take(z, np.arange(1, z.shape[axis]), axis=axis)
        with np.errstate(invalid="ignore"):
            diff = np.abs(a - b)
        near = np.minimum(a, b)
        jump = ~(diff <= np.maximum(threshold, relative * near))  # inf/NaN jumps count
        jump &= np.isfinite(near)
        if axis == 0:
            edges[:-1] |= jump
            edges[1:] |= jump
        else:
            edges[:, :-1] |= jump
            edges[:, 1:] |= jump
    for _ in range(max(0, width - 1)):
        grown = edges.copy()
        grown[1:] |= edges[:-1]
        grown[:-1] |= edges[1:]
        grown[:, 1:] |= edges[:, :-1]
        grown[:, :-1] |= edges[:, 1:]
        edges = grown
    return edges


def apply_depth_noise(
    depth: np.ndarray,
    noise: Optional[SensorNoise],
    seed: SeedLike = 0,
    rgb: Optional[np.ndarray] = None,
    fx: Optional[float] = None,
) -> np.ndarray:
    """Return a noisy copy (float32 metres, NaN invalid) of a clean metric depth image.

    Args:
        depth: H×W clean depth in metres (``z`` along the optical axis), NaN/inf where no return.
        noise: the model; ``None`` returns the clean depth (out-of-range pixels still invalid).
        seed: integer seed or generator; the same seed gives the same noise.
        rgb: H×W×3 uint8 clean colour image registered to ``depth`` (dark/saturated dropouts;
            without it they are off).
        fx: focal length in pixels (stereo shadows); default ``600 * W / 640``.
    """
    clean = np.asarray(depth, dtype=np.float64)
    out = np.where(np.isfinite(clean), clean, np.nan)
    if noise is None:
        return out.astype(np.float32)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    h, w = out.shape
    # Draw every random field for the full image so results do not depend on the mask layout.
    shift = np.rint(rng.normal(0.0, max(noise.sigma_lateral_px, 1e-9), size=(2, h, w)))
    gauss = rng.standard_normal(out.shape)
    drop_u = rng.random(out.shape)
    mix_u = rng.random(out.shape)
    alpha = rng.random(out.shape)
    if noise.sigma_lateral_px > 0:
        rows = np.clip(np.arange(h)[:, None] + shift[0].astype(int), 0, h - 1)
        cols = np.clip(np.arange(w)[None, :] + shift[1].astype(int), 0, w - 1)
        out = out[rows, cols]
    valid = np.isfinite(out)
    edges = depth_edges(out, noise.edge_threshold, noise.edge_relative, noise.edge_width)
    extra_drop = np.zeros(out.shape, dtype=bool)
    if noise.realistic:
        # Drawn after the fields above so the default model's noise is unchanged.
        out, extra_drop = _active_stereo(out, noise, rng, rgb, fx)
        valid = np.isfinite(out)
        edges = depth_edges(out, noise.edge_threshold, noise.edge_relative, noise.edge_width)
    if noise.flying_pixel > 0:
        # The farthest valid 4-neighbour (np.roll wraps at the border: harmless there).
        far = out.copy()
        for axis, step in ((0, 1), (0, -1), (1, 1), (1, -1)):
            far = np.fmax(far, np.roll(out, step, axis))
        fly = edges & valid & np.isfinite(far) & (mix_u < noise.flying_pixel)
        out = np.where(fly, alpha * out + (1.0 - alpha) * far, out)
    noisy = out + gauss * noise.sigma(np.where(valid, out, noise.z_0))
    if noise.z_quant_per_m > 0:
        # A fixed disparity step: inverse depth on a grid of z_quant_per_m.
        with np.errstate(invalid="ignore", divide="ignore"):
            levels = np.maximum(np.round(1.0 / (noisy * noise.z_quant_per_m)), 1.0)
            noisy = 1.0 / (levels * noise.z_quant_per_m)
    if noise.quantisation > 0:
        noisy = np.round(noisy / noise.quantisation) * noise.quantisation
    drop = np.where(edges, drop_u < noise.edge_dropout, drop_u < noise.random_dropout)
    drop |= (noisy < noise.min_range) | (noisy > noise.max_range)
    drop |= extra_drop
    noisy[drop | ~valid] = np.nan
    if noise.misregistration_px > 0:
        dx, dy = misregistration_shift(noise, rng)
        noisy = shift_image(noisy, dx, dy, np.nan)
    return noisy.astype(np.float32)


def misregistration_shift(noise: SensorNoise, rng: np.random.Generator) -> Tuple[int, int]:
    """Integer ``(dx, dy)`` of the depth image relative to the colour image, for one frame."""
    angle = rng.uniform(0.0, 2.0 * np.pi)
    m = noise.misregistration_px
    return int(np.rint(m * np.cos(angle))), int(np.rint(m * np.sin(angle)))


def shift_image(img: np.ndarray, dx: int, dy: int, fill) -> np.ndarray:
    """``out[v, u] = img[v - dy, u - dx]`` (content moves by ``(dx, dy)``), ``fill`` outside."""
    h, w = img.shape[:2]
    out = np.full_like(img, fill)
    dx, dy = int(dx), int(dy)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    out[max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)] = img[
        max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)
    ]
    return out


def stereo_occlusion(depth: np.ndarray, fx: float, baseline: float) -> np.ndarray:
    """Pixels a second imager ``baseline`` metres to the right (same rows) cannot see.

    Pixel ``u`` at disparity ``d = fx * baseline / z`` lands at ``u - d`` in the second view; it
    is hidden when a pixel to its right lands at or left of that (a nearer surface is in front).
    """
    z = np.where(np.isfinite(depth) & (depth > 0), depth, np.inf)
    x = np.arange(z.shape[1], dtype=np.float64)[None, :] - fx * baseline / z
    # Running minimum from the right of the second-view position, excluding the pixel itself.
    right_min = np.minimum.accumulate(x[:, ::-1], axis=1)[:, ::-1]
    right_min = np.concatenate([right_min[:, 1:], np.full((z.shape[0], 1), np.inf)], axis=1)
    return np.isfinite(z) & (right_min <= x - 0.5)


def _active_stereo(out, noise: SensorNoise, rng: np.random.Generator, rgb, fx):
    """Shadows, fattening, mixed edges, dark/saturated dropouts (see the module docstring)."""
    from scipy import ndimage
    from scipy.special import ndtr

    h, w = out.shape
    mix_u = rng.random(out.shape)
    blob = rng.standard_normal(out.shape)
    drop = np.zeros(out.shape, dtype=bool)
    if noise.stereo_baseline > 0:
        f = float(fx) if fx is not None else 600.0 * w / 640.0
        drop |= stereo_occlusion(out, f, noise.stereo_baseline)
    if noise.fattening_px > 0:
        size = 2 * int(noise.fattening_px) + 1
        near = ndimage.minimum_filter(np.where(np.isfinite(out), out, np.inf), size=size)
        jump = np.isfinite(near) & ~(
            np.abs(out - near) <= np.maximum(noise.edge_threshold, noise.edge_relative * near)
        )
        out = np.where(jump, near, out)
    if noise.edge_mix > 0 and noise.edge_mix_px > 0:
        valid = np.isfinite(out)
        size = 2 * int(noise.edge_mix_px) + 1
        band = depth_edges(out, noise.edge_threshold, noise.edge_relative, noise.edge_mix_px)
        num = ndimage.uniform_filter(np.where(valid, out, 0.0), size=size, mode="nearest")
        den = ndimage.uniform_filter(valid.astype(np.float64), size=size, mode="nearest")
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = num / den
        out = np.where(band & valid & (mix_u < noise.edge_mix) & (den > 0), mean, out)
    if rgb is not None and (noise.dark_dropout > 0 or noise.saturated_dropout > 0):
        c = np.asarray(rgb, dtype=np.float64)[..., :3]
        luma = 0.299 * c[..., 0] + 0.587 * c[..., 1] + 0.114 * c[..., 2]
        p = noise.dark_dropout * np.clip((noise.dark_luma - luma) / noise.dark_luma, 0.0, 1.0)
        sat = (c.max(axis=-1) >= 250) & (luma >= 200)
        p = np.where(sat, np.maximum(p, noise.saturated_dropout), p)
        if noise.dropout_blob_px > 0:
            # A smooth Gaussian field, re-standardised, then mapped to uniform: blob holes.
            field = ndimage.gaussian_filter(blob, noise.dropout_blob_px)
            u = ndtr(field / max(float(field.std()), 1e-12))
        else:
            u = ndtr(blob)
        drop |= u < p
    return out, drop


REALSENSE_D4XX = {
    "edge_dropout": 0.1,
    "stereo_baseline": 0.065,
    "fattening_px": 0,
    "edge_mix_px": 2,
    "edge_mix": 0.2,
    "dark_dropout": 0.13,
    "dark_luma": 48.0,
    "saturated_dropout": 0.0,
    "dropout_blob_px": 2.0,
    "z_quant_per_m": 0.0016,
    "misregistration_px": 2.0,
}
"""Parameters of :meth:`SensorNoise.realsense` (measured; see its docstring)."""


def apply_rgb_noise(
    rgb: np.ndarray, noise: Optional[SensorNoise], seed: SeedLike = 0
) -> np.ndarray:
    """Return a copy of an H×W×3 uint8 image with Gaussian pixel noise (``noise.rgb_sigma``)."""
    if noise is None or noise.rgb_sigma <= 0:
        return np.array(rgb, dtype=np.uint8, copy=True)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    noisy = rgb.astype(np.float32) + rng.normal(0.0, noise.rgb_sigma, size=rgb.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class PromptNoise:
    """Imperfect prompts: masks and boxes a few pixels off, as given by a person or a detector.

    Each mask is shifted by up to ``shift_px`` (a random direction, rounded per axis) and grown
    (dilated) or shrunk (eroded) by an integer radius in ``[-grow_px, grow_px]``; each box side
    moves by an integer in ``[-box_px, box_px]``. Deterministic given the seed.
    """

    shift_px: float = 2.0
    grow_px: int = 2
    box_px: int = 3

    @classmethod
    def none(cls) -> "PromptNoise":
        """Exact prompts."""
        return cls(0.0, 0, 0)


def perturb_mask(
    mask: np.ndarray,
    seed: SeedLike = 0,
    shift_px: float = 2.0,
    grow_px: int = 2,
) -> np.ndarray:
    """A copy of a bool mask shifted by up to ``shift_px`` and grown/shrunk by ``grow_px``.

    The shift direction is uniform, its length uniform in ``[0, shift_px]``; the radius is an
    integer in ``[-grow_px, grow_px]`` (negative erodes, by a 3×3 cross per step). A mask that
    would vanish when eroded keeps its last non-empty version.
    """
    from scipy import ndimage

    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    length = rng.uniform(0.0, shift_px)
    radius = int(rng.integers(-int(grow_px), int(grow_px) + 1)) if grow_px > 0 else 0
    out = np.asarray(mask, dtype=bool)
    dx, dy = int(np.rint(length * np.cos(angle))), int(np.rint(length * np.sin(angle)))
    out = shift_image(out, dx, dy, False)
    for _ in range(abs(radius)):
        nxt = ndimage.binary_dilation(out) if radius > 0 else ndimage.binary_erosion(out)
        if not nxt.any():
            break
        out = nxt
    return out


def jitter_box(
    box: Sequence[int], size: Tuple[int, int], seed: SeedLike = 0, box_px: int = 3
) -> Tuple[int, int, int, int]:
    """A box ``(x_min, y_min, x_max, y_max)`` with each side moved by up to ``box_px``.

    Clipped to the ``(width, height)`` image, never inverted.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    d = rng.integers(-int(box_px), int(box_px) + 1, size=4) if box_px > 0 else np.zeros(4, int)
    w, h = size
    x0 = int(np.clip(box[0] + d[0], 0, w - 1))
    y0 = int(np.clip(box[1] + d[1], 0, h - 1))
    x1 = int(np.clip(box[2] + d[2], x0, w - 1))
    y1 = int(np.clip(box[3] + d[3], y0, h - 1))
    return x0, y0, x1, y1


#: The benchmarks' depth sensor models by name (``--sensor``): ``default`` is the model every
#: earlier figure used; ``realsense`` the one measured on real frames.
SENSORS = {"default": SensorNoise(), "realsense": SensorNoise.realsense()}


def prompted_query(scene: "SyntheticScene", mode: str, prompts: Optional[PromptNoise] = None,
                   pad: int = 0) -> "SegmentationQuery":
    """The scene's box (``mode="box"``, grown by ``pad``) or mask query, perturbed by ``prompts``.

    ``prompts=None`` gives the exact prompts. Each object's perturbation is seeded by the scene
    and the object: the same scene gets the same imperfect prompts in every benchmark.
    """
    from sam3d_ros.core.types import BoxPrompt, ObjectPrompt, SegmentationQuery

    if mode not in ("box", "mask"):
        raise ValueError(f"mode must be 'box' or 'mask', not {mode!r}")
    if prompts is None or prompts == PromptNoise.none():
        return scene.box_query(pad) if mode == "box" else scene.mask_query()
    size = (scene.frame.width, scene.frame.height)
    if mode == "box":
        objs = []
        for b in scene.box_prompts(pad):
            rng = np.random.default_rng([scene.seed, b.object_id, 0xB0C5])
            x0, y0, x1, y1 = jitter_box((b.x_min, b.y_min, b.x_max, b.y_max), size, rng,
                                        prompts.box_px)
            objs.append(ObjectPrompt(object_id=b.object_id,
                                     boxes=[BoxPrompt(x0, y0, x1, y1, object_id=b.object_id)]))
        return SegmentationQuery(objects=objs)
    masks = [
        perturb_mask(o.visible_mask, np.random.default_rng([scene.seed, o.object_id, 0x3A5C]),
                     prompts.shift_px, prompts.grow_px)
        for o in scene.objects
    ]
    return SegmentationQuery(masks=masks)
