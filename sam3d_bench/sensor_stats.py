"""Statistics of depth-sensor artefacts, measured the same way on real and on synthetic frames.

These parameterise :meth:`sam3d_bench.sensor.SensorNoise.realsense` (measured on the real
RealSense frames by ``benchmarks/measure_real_sensor.py``) and let a synthetic scene set be checked
against the real one. Every function takes a depth image in metres with ``NaN`` (or ``0``) for
"no return", an H×W×3 ``uint8`` colour image registered to it, and optional boolean object masks
drawn on the colour image. numpy + scipy only; deterministic.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

JUMP_ABS = 0.02
"""A depth step is a discontinuity when larger than this (metres)..."""
JUMP_REL = 0.02
"""...or this fraction of the nearer depth, whichever is larger."""


def as_depth(depth: np.ndarray) -> np.ndarray:
    """Float64 copy with every non-positive / non-finite value as NaN."""
    z = np.asarray(depth, dtype=np.float64).copy()
    z[~(z > 0) | ~np.isfinite(z)] = np.nan
    return z


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of an 8-bit colour image, 0–255."""
    c = np.asarray(rgb, dtype=np.float64)[..., :3]
    return 0.299 * c[..., 0] + 0.587 * c[..., 1] + 0.114 * c[..., 2]


def _jump(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.abs(a - b) > np.maximum(JUMP_ABS, JUMP_REL * np.fmin(a, b))


def depth_discontinuities(z: np.ndarray) -> np.ndarray:
    """Pixels with a valid 4-neighbour across a depth jump (holes are not edges here)."""
    edges = np.zeros(z.shape, dtype=bool)
    jx = _jump(z[:, :-1], z[:, 1:])
    jy = _jump(z[:-1], z[1:])
    edges[:, :-1] |= jx
    edges[:, 1:] |= jx
    edges[:-1] |= jy
    edges[1:] |= jy
    return edges


def _disk(radius: int) -> np.ndarray:
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return xx * xx + yy * yy <= r * r + r  # a rounder disk than the L2 ball for small r


# --------------------------------------------------------------------------------------------
# holes


def support_region(z: np.ndarray, window: int = 31, min_valid: float = 0.3) -> np.ndarray:
    """Pixels inside the measured scene: at least ``min_valid`` of a window around has depth.

    Excludes what lies beyond the range cut-off or the stereo pair's invalid band (whole regions
    with no return), so a hole rate there measures surface dropouts, not the working range.
    """
    valid = np.isfinite(z).astype(np.float64)
    return ndimage.uniform_filter(valid, size=window, mode="constant") >= min_valid


LUMA_BINS = (0.0, 32.0, 64.0, 128.0, 192.0, 256.0)


def hole_stats(
    z: np.ndarray, rgb: np.ndarray, exclude: Optional[np.ndarray] = None
) -> Dict[str, object]:
    """Hole counts overall and per luminance bin (inside the :func:`support_region`).

    Returns ``holes``/``pixels`` overall, per ``LUMA_BINS`` bin (``bin_holes``, ``bin_pixels``)
    and for saturated pixels (a channel ≥ 250 with luma ≥ 200: specular highlights, white).
    Stereo-occlusion holes are not excluded: they count in every bin.
    """
    support = support_region(z)
    if exclude is not None:
        support &= ~np.asarray(exclude, dtype=bool)
    hole = ~np.isfinite(z)
    luma = luminance(rgb)
    idx = np.digitize(luma, LUMA_BINS[1:-1])
    bin_holes = np.bincount(idx[support], weights=hole[support], minlength=len(LUMA_BINS) - 1)
    bin_pixels = np.bincount(idx[support], minlength=len(LUMA_BINS) - 1)
    sat = support & (np.asarray(rgb)[..., :3].max(axis=-1) >= 250) & (luma >= 200)
    return {
        "holes": int(hole[support].sum()),
        "pixels": int(support.sum()),
        "bin_holes": bin_holes.astype(np.int64),
        "bin_pixels": bin_pixels.astype(np.int64),
        "sat_holes": int(hole[sat].sum()),
        "sat_pixels": int(sat.sum()),
    }


def shadow_runs(z: np.ndarray, fx: float, max_len: int = 80) -> Dict[str, np.ndarray]:
    """Horizontal hole runs between a far and a near surface (stereo occlusion shadows).

    For every run of 1..``max_len`` invalid pixels in a row with valid depth on both sides and a
    depth jump across it, returns the run length, which side is far (``far_left``: the far
    surface is left of the run), and the stereo baseline the run implies, ``length / (fx *
    (1/z_near - 1/z_far))`` (metres): the width of the region the second imager cannot see.
    """
    lengths, far_left, baseline = [], [], []
    h, w = z.shape
    valid = np.isfinite(z)
    for r in range(h):
        row_valid = valid[r]
        if row_valid.all() or not row_valid.any():
            continue
        # Starts and ends of invalid runs.
        d = np.diff(np.concatenate([[1], row_valid.astype(np.int8), [1]]))
        starts = np.nonzero(d == -1)[0]
        ends = np.nonzero(d == 1)[0]  # exclusive
        for s, e in zip(starts, ends, strict=True):
            n = e - s
            if s < 3 or e > w - 3 or n > max_len:
                continue
            left = z[r, s - 3 : s]
            right = z[r, e : e + 3]
            if not (np.isfinite(left).all() and np.isfinite(right).all()):
                continue
            zl, zr = float(np.median(left)), float(np.median(right))
            if not _jump(np.array(zl), np.array(zr)):
                continue
            near, far = min(zl, zr), max(zl, zr)
            lengths.append(n)
            far_left.append(zl > zr)
            baseline.append(n / (fx * (1.0 / near - 1.0 / far)))
    return {
        "length": np.asarray(lengths, dtype=np.int64),
        "far_left": np.asarray(far_left, dtype=bool),
        "baseline": np.asarray(baseline, dtype=np.float64),
    }


# --------------------------------------------------------------------------------------------
# mask edges and misregistration


def _local_reference(z: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Depth of the nearest pixel of ``source`` (with valid depth) for every pixel."""
    src = source & np.isfinite(z)
    if not src.any():
        return np.full(z.shape, np.nan)
    _, (ri, ci) = ndimage.distance_transform_edt(~src, return_indices=True)
    return z[ri, ci]


def mask_ring_stats(z: np.ndarray, mask: np.ndarray, ring: int = 3, inner: int = 6) -> Dict:
    """Edge pixels of a mask that carry background depth.

    The ring is the mask's pixels within ``ring`` px of its border; each ring pixel is compared
    with the nearest valid pixel of the mask's interior (eroded by ``inner`` px). A ring pixel is
    *far* when it lies more than ``JUMP_ABS + JUMP_REL * z`` behind that reference: the symptom
    of colour–depth misregistration and depth bleeding (the mask's edge sees the background).
    """
    mask = np.asarray(mask, dtype=bool)
    interior = ndimage.binary_erosion(mask, _disk(inner))
    ring_px = mask & ~ndimage.binary_erosion(mask, _disk(ring))
    ref = _local_reference(z, interior)
    ok = ring_px & np.isfinite(z) & np.isfinite(ref)
    with np.errstate(invalid="ignore"):
        far = ok & (z > ref + JUMP_ABS + JUMP_REL * ref)
    return {
        "ring_pixels": int(ring_px.sum()),
        "ring_valid": int(ok.sum()),
        "ring_far": int(far.sum()),
        "ring_holes": int((ring_px & ~np.isfinite(z)).sum()),
        "interior_pixels": int(interior.sum()),
        "interior_holes": int((interior & ~np.isfinite(z)).sum()),
    }


def mask_depth_shift(
    z: np.ndarray, mask: np.ndarray, radius: int = 5
) -> Optional[Tuple[int, int, float]]:
    """Shift ``(dx, dy)`` of the mask that best matches the object's depth silhouette.

    Near the mask's outline, a pixel is *object-like* when its depth is not behind the nearest
    interior pixel by more than the jump margin. Only pixels within a few px of a real depth
    discontinuity are scored (the contact with the table has none), and holes are ignored. For
    every shift within ``radius`` px the shifted mask is compared with the object-like pixels; the
    best-agreeing shift is returned (ties: the smallest), with its agreement gain over no shift.
    ``None`` when the outline has too few scorable pixels. Positive ``dx``: the depth silhouette
    lies right of the mask.
    """
    mask = np.asarray(mask, dtype=bool)
    pad = radius + 3
    interior = ndimage.binary_erosion(mask, _disk(pad))
    if interior.sum() < 20:
        return None
    band = ndimage.binary_dilation(mask, _disk(pad)) & ~interior
    edges = ndimage.binary_dilation(depth_discontinuities(z), _disk(radius + 2))
    ref = _local_reference(z, interior)
    score_px = band & edges & np.isfinite(z) & np.isfinite(ref)
    if score_px.sum() < 50:
        return None
    with np.errstate(invalid="ignore"):
        obj = z <= ref + JUMP_ABS + JUMP_REL * ref
    rows, cols = np.nonzero(score_px)
    o = obj[rows, cols]
    best, base = None, None
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            r0, c0 = rows - dy, cols - dx
            inside = (r0 >= 0) & (r0 < z.shape[0]) & (c0 >= 0) & (c0 < z.shape[1])
            m = np.zeros(len(rows), dtype=bool)
            m[inside] = mask[r0[inside], c0[inside]]
            agree = float(np.mean(m == o))
            key = (-agree, dx * dx + dy * dy)
            if best is None or key < best[0]:
                best = (key, dx, dy, agree)
            if dx == 0 and dy == 0:
                base = agree
    assert best is not None and base is not None
    return best[1], best[2], best[3] - base


def gradient_depth_shift(z: np.ndarray, rgb: np.ndarray, radius: int = 6) -> Tuple[int, int]:
    """Global colour–depth shift from edges: where colour gradients best meet depth edges.

    Mask-free: depth discontinuities (between valid pixels) are shifted by every ``(dx, dy)``
    within ``radius`` and scored by the mean colour-gradient magnitude they land on. Returns the
    shift that moves the depth edges onto the colour edges, i.e. the colour content lies at
    ``(dx, dy)`` from the depth content.
    """
    luma = ndimage.gaussian_filter(luminance(rgb), 1.0)
    grad = np.hypot(ndimage.sobel(luma, 0), ndimage.sobel(luma, 1))
    jx = _jump(z[:, :-1], z[:, 1:])
    jy = _jump(z[:-1], z[1:])
    # Edge positions at the near side, where the object's outline is.
    edges = np.zeros(z.shape, dtype=bool)
    zz = np.where(np.isfinite(z), z, np.inf)
    near_left = zz[:, :-1] < zz[:, 1:]
    edges[:, :-1] |= jx & near_left
    edges[:, 1:] |= jx & ~near_left
    near_up = zz[:-1] < zz[1:]
    edges[:-1] |= jy & near_up
    edges[1:] |= jy & ~near_up
    rows, cols = np.nonzero(edges)
    h, w = z.shape
    best = None
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            r, c = rows + dy, cols + dx
            ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            s = float(grad[r[ok], c[ok]].mean()) if ok.any() else 0.0
            key = (-s, dx * dx + dy * dy)
            if best is None or key < best[0]:
                best = (key, dx, dy)
    assert best is not None
    return best[1], best[2]


# --------------------------------------------------------------------------------------------
# flying pixels and quantisation


def flying_pixel_stats(
    z: np.ndarray, step: int = 2, margin: float = 0.15, min_jump: float = 0.08
) -> Dict[str, int]:
    """Pixels across a depth discontinuity whose depth lies between the two sides.

    For each valid pixel whose neighbours ``step`` px away (left/right or up/down) are valid and
    differ by a jump ``J > min_jump`` (an object against its background, not a small step on a
    sloped surface), with both sides locally flat (the next pixel outwards within
    ``J / 8``: a step, not a steep slope such as a table seen at a grazing angle), it is *flying*
    when its depth is more than ``margin * J`` away from both sides. Returns the number of such
    jump-centre pixels and of flying ones.
    """
    cand = 0
    fly = 0
    k = step
    for axis in (0, 1):
        def take(lo, hi, axis=axis):
            return np.take(z, np.arange(lo, z.shape[axis] - hi), axis=axis)

        a0, a = take(0, 2 * k + 2), take(1, 2 * k + 1)
        c = take(k + 1, k + 1)
        b, b0 = take(2 * k + 1, 1), take(2 * k + 2, 0)
        lo, hi = np.fmin(a, b), np.fmax(a, b)
        with np.errstate(invalid="ignore"):
            jump = hi - lo
            flat = (np.abs(a0 - a) < jump / 8) & (np.abs(b0 - b) < jump / 8)
            j = (jump > min_jump) & flat & np.isfinite(c)
            f = j & (c > lo + margin * jump) & (c < hi - margin * jump)
        cand += int(j.sum())
        fly += int(f.sum())
    return {"jump_pixels": cand, "flying": fly}


def quantisation_steps(
    z: np.ndarray,
    edges: Sequence[float] = tuple(np.arange(0.3, 3.01, 0.3)),
    min_pixels: int = 3000,
) -> List[Tuple[float, float, float, int]]:
    """Depth step per range bin, from the gaps between consecutive distinct depth values.

    Dense enough bins (``min_pixels`` valid pixels) sample every level the sensor can report, so
    the gap is the quantisation step there. Returns ``(bin centre m, median gap m, median of
    gap / z^2 (1/m), pixels)`` per bin; the second ratio is what a disparity quantiser fixes.
    """
    v = z[np.isfinite(z)]
    out = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = v[(v >= lo) & (v < hi)]
        if sel.size < min_pixels:
            continue
        u = np.unique(np.round(sel, 6))
        if u.size < 3:
            continue
        gaps = np.diff(u)
        mid = 0.5 * (u[:-1] + u[1:])
        out.append(
            (0.5 * (lo + hi), float(np.median(gaps)), float(np.median(gaps / mid**2)), sel.size)
        )
    return out


def fit_z2_step(steps: Sequence[Tuple[float, float, float, int]], floor: float = 0.0015) -> float:
    """``c`` of ``step = c * z^2`` from bins whose median gap exceeds ``floor`` (mm rounding)."""
    ratios = [r for _, s, r, _ in steps if s > floor]
    return float(np.median(ratios)) if ratios else float("nan")


# --------------------------------------------------------------------------------------------
# frames and the summary


class RGBDFrame:
    """One frame for the statistics: depth (NaN invalid), colour, masks, ``fx``, a name."""

    def __init__(self, name: str, depth: np.ndarray, rgb: np.ndarray, fx: float,
                 masks: Sequence[np.ndarray] = (), group: str = "",
                 exclude: Optional[np.ndarray] = None):
        self.exclude = exclude
        """Pixels left out of the hole statistics (synthetic: where the render hit nothing)."""
        self.name = name
        self.depth = as_depth(depth)
        self.rgb = np.asarray(rgb)[..., :3]
        self.fx = float(fx)
        self.masks = [np.asarray(m, dtype=bool) for m in masks]
        self.group = group or name.split("_")[0]


def load_rgbd_folder(root) -> List[RGBDFrame]:
    """Read the real frames of ``shared/real_rgbd`` (``rgb.png``, ``depth.npz``, ``masks/``)."""
    import json
    from pathlib import Path

    from PIL import Image

    frames = []
    for d in sorted(p for p in Path(root).iterdir() if (p / "depth.npz").is_file()):
        with np.load(d / "depth.npz", allow_pickle=False) as npz:
            depth = npz["depth"]
            k = npz["K"]
        rgb = np.asarray(Image.open(d / "rgb.png").convert("RGB"))
        masks = [np.asarray(Image.open(m)) > 0 for m in sorted((d / "masks").glob("*.png"))]
        meta = json.loads((d / "frame.json").read_text()) if (d / "frame.json").is_file() else {}
        # dof6 masks are the source's segmented depth points, re-projected: depth-aligned.
        mask_kind = "depth" if "point cloud" in str(meta.get("masks", "")) else "colour"
        frame = RGBDFrame(d.name, depth, rgb, float(k[0, 0]), masks)
        frame.mask_kind = mask_kind  # type: ignore[attr-defined]
        frames.append(frame)
    return frames


def summarise(frames: Sequence[RGBDFrame], colour_masks_only: bool = True) -> Dict[str, object]:
    """All statistics over a frame set (the numbers ``SensorNoise.realsense`` is fitted to).

    ``colour_masks_only``: ring / shift statistics use only masks drawn on the colour image
    (frames whose ``mask_kind`` is not ``"depth"``); depth-derived masks are aligned with the
    depth by construction and would hide the misregistration.
    """
    nb = len(LUMA_BINS) - 1
    holes = pixels = sat_h = sat_p = 0
    bin_h = np.zeros(nb)
    bin_p = np.zeros(nb)
    runs = {"length": [], "far_left": [], "baseline": []}
    ring = {"ring_pixels": 0, "ring_valid": 0, "ring_far": 0, "ring_holes": 0,
            "interior_pixels": 0, "interior_holes": 0}
    shifts: List[Tuple[float, float]] = []
    grad_shifts: Dict[str, Tuple[float, float]] = {}
    fly = {"jump_pixels": 0, "flying": 0}
    quant: Dict[str, list] = {}
    for f in frames:
        # Shifts are reported in pixels at 640 px width (the synthetic and most real frames).
        scale = 640.0 / f.depth.shape[1]
        hs = hole_stats(f.depth, f.rgb, f.exclude)
        holes += hs["holes"]
        pixels += hs["pixels"]
        bin_h += hs["bin_holes"]
        bin_p += hs["bin_pixels"]
        sat_h += hs["sat_holes"]
        sat_p += hs["sat_pixels"]
        sr = shadow_runs(f.depth, f.fx)
        for key in runs:
            runs[key].append(sr[key])
        if not colour_masks_only or getattr(f, "mask_kind", "colour") != "depth":
            for m in f.masks:
                rs = mask_ring_stats(f.depth, m)
                for key in ring:
                    ring[key] += rs[key]
                s = mask_depth_shift(f.depth, m, radius=max(5, round(5 / scale)))
                if s is not None:
                    shifts.append((s[0] * scale, s[1] * scale))
        g = gradient_depth_shift(f.depth, f.rgb, radius=max(6, round(6 / scale)))
        grad_shifts[f.name] = (g[0] * scale, g[1] * scale)
        fs = flying_pixel_stats(f.depth)
        fly["jump_pixels"] += fs["jump_pixels"]
        fly["flying"] += fs["flying"]
        quant[f.name] = quantisation_steps(f.depth)
    length = np.concatenate(runs["length"]) if runs["length"] else np.zeros(0)
    far_left = np.concatenate(runs["far_left"]) if runs["far_left"] else np.zeros(0, bool)
    baseline = np.concatenate(runs["baseline"]) if runs["baseline"] else np.zeros(0)
    sh = np.array(shifts, dtype=np.float64).reshape(-1, 2)
    gs = np.array(list(grad_shifts.values()), dtype=np.float64).reshape(-1, 2)
    all_steps = [s for v in quant.values() for s in v]
    return {
        "frames": len(frames),
        "hole_fraction": holes / max(pixels, 1),
        "hole_by_luma": {
            f"{int(lo)}-{int(hi)}": (float(h / p) if p else float("nan"), int(p))
            for lo, hi, h, p in zip(LUMA_BINS[:-1], LUMA_BINS[1:], bin_h, bin_p, strict=True)
        },
        "hole_saturated": (sat_h / sat_p if sat_p else float("nan"), int(sat_p)),
        "shadow_runs": int(length.size),
        "shadow_far_left_fraction": float(far_left.mean()) if far_left.size else float("nan"),
        "shadow_baseline_m": (
            float(np.median(baseline[far_left])) if far_left.any() else float("nan")
        ),
        "shadow_length_median_px": float(np.median(length)) if length.size else float("nan"),
        "ring_far_fraction": ring["ring_far"] / max(ring["ring_valid"], 1),
        "ring_hole_fraction": ring["ring_holes"] / max(ring["ring_pixels"], 1),
        "interior_hole_fraction": ring["interior_holes"] / max(ring["interior_pixels"], 1),
        "ring_pixels": ring["ring_pixels"],
        "mask_shifts": [tuple(float(v) for v in s) for s in sh],
        "mask_shift_median_px": (
            tuple(float(v) for v in np.median(sh, axis=0)) if len(sh) else (np.nan, np.nan)
        ),
        "mask_shift_abs_median_px": float(np.median(np.hypot(sh[:, 0], sh[:, 1])))
        if len(sh)
        else float("nan"),
        "gradient_shifts": grad_shifts,
        "gradient_shift_median_px": (
            tuple(float(v) for v in np.median(gs, axis=0)) if len(gs) else (np.nan, np.nan)
        ),
        "flying_fraction": fly["flying"] / max(fly["jump_pixels"], 1),
        "jump_pixels": fly["jump_pixels"],
        "quantisation": quant,
        "z2_step_per_m": fit_z2_step(all_steps),
    }
