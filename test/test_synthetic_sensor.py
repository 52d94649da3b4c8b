"""Realistic (RealSense-like) sensor effects, prompt noise, and the preset against real data."""

import hashlib

import numpy as np
import pytest
from real_data import require_real_rgbd

from sam3d_bench import sensor_stats as ss
from sam3d_bench.sensor import (
    REALSENSE_D4XX,
    PromptNoise,
    SensorNoise,
    apply_depth_noise,
    jitter_box,
    perturb_mask,
    prompted_query,
)

# Every pre-existing effect off: one new effect at a time is visible exactly.
QUIET = SensorNoise(sigma_0=0.0, sigma_k=0.0, sigma_lateral_px=0.0, flying_pixel=0.0,
                    quantisation=0.0, edge_dropout=0.0, random_dropout=0.0, rgb_sigma=0.0)
FX = 600.0


def _square(fg=0.6, bg=1.0, h=120, w=160):
    z = np.full((h, w), bg, dtype=np.float32)
    z[40:80, 60:100] = fg
    return z


def _legacy_scene():
    z = np.full((60, 80), 1.2, dtype=np.float32)
    z[15:45, 20:50] = 0.7
    z[:5, :] = np.nan
    return z


def test_default_model_unchanged():
    # SHA-256 of the default model's output on this image with seed 5, computed with the sensor
    # module before the realistic effects were added (commit c162be6).
    rgb = np.zeros((60, 80, 3), np.uint8)
    out = apply_depth_noise(_legacy_scene(), SensorNoise(), seed=5, rgb=rgb, fx=300.0)
    digest = hashlib.sha256(np.nan_to_num(out, nan=-1).tobytes()).hexdigest()
    assert digest == "b7db16aa3c0dc96bb0cc1850e5d8f8043d6c9e33ad5b1621b596efc2ba25f644"
    assert not SensorNoise().realistic and SensorNoise.realsense().realistic


def test_realsense_preset_values():
    rs = SensorNoise.realsense()
    for name, value in REALSENSE_D4XX.items():
        assert getattr(rs, name) == value
    assert SensorNoise.realsense(misregistration_px=0.0).misregistration_px == 0.0
    # Kept from the default model.
    assert rs.sigma_0 == SensorNoise().sigma_0 and rs.quantisation == SensorNoise().quantisation


@pytest.mark.parametrize("pixels", [2.0, 4.0])
def test_misregistration_shifts_depth(pixels):
    clean = _square()
    mask = np.isclose(clean, 0.6)
    found = set()
    for seed in range(6):
        out = apply_depth_noise(clean, SensorNoise(**{**QUIET.__dict__,
                                                      "misregistration_px": pixels}), seed)
        rows, cols = np.nonzero(np.isclose(out, 0.6))
        dy, dx = int(rows.min()) - 40, int(cols.min()) - 60
        assert np.hypot(dx, dy) == pytest.approx(pixels, abs=0.75)
        # The whole image moved: exactly the clean square at (dx, dy), NaN only at the border.
        assert np.isclose(out, 0.6).sum() == mask.sum()
        assert np.isnan(out).sum() == abs(dx) * 120 + abs(dy) * 160 - abs(dx * dy)
        # The measurement finds the same shift from the (unshifted) colour mask.
        assert ss.mask_depth_shift(ss.as_depth(out), mask)[:2] == (dx, dy)
        found.add((dx, dy))
    assert len(found) > 1  # the direction is drawn per frame
    quiet = apply_depth_noise(clean, QUIET, 0)
    assert ss.mask_depth_shift(ss.as_depth(quiet), mask)[:2] == (0, 0)


def test_dark_dropout_on_dark_pixels_only():
    clean = np.full((120, 160), 0.8, dtype=np.float32)
    rgb = np.full((120, 160, 3), 150, np.uint8)
    rgb[:, :80] = 5  # dark left half
    for blob in (0.0, 2.0):
        noise = SensorNoise(**{**QUIET.__dict__, "dark_dropout": 0.5, "dropout_blob_px": blob})
        out = apply_depth_noise(clean, noise, 3, rgb=rgb)
        dark_holes = np.isnan(out[:, :80]).mean()
        # Ramp: at luminance 5 the probability is 0.5 * (48 - 5) / 48.
        assert dark_holes == pytest.approx(0.5 * 43 / 48, abs=0.08)
        assert np.isnan(out[:, 80:]).mean() == 0.0
    # Without the colour image there is nothing to be dark.
    assert not np.isnan(apply_depth_noise(clean, noise, 3)).any()


def test_saturated_dropout():
    clean = np.full((100, 100), 0.8, dtype=np.float32)
    rgb = np.full((100, 100, 3), 255, np.uint8)
    rgb[50:] = 120
    noise = SensorNoise(**{**QUIET.__dict__, "saturated_dropout": 0.3})
    out = apply_depth_noise(clean, noise, 0, rgb=rgb)
    assert np.isnan(out[:50]).mean() == pytest.approx(0.3, abs=0.05)
    assert not np.isnan(out[50:]).any()


def test_disparity_quantisation_grows_with_z2():
    c = 0.0016
    ramp = np.linspace(0.5, 3.0, 400 * 400, dtype=np.float64).reshape(400, 400).astype(np.float32)
    out = apply_depth_noise(ramp, SensorNoise(**{**QUIET.__dict__, "z_quant_per_m": c}), 0)
    levels = np.unique(out[np.isfinite(out)].astype(np.float64))
    mid = 0.5 * (levels[1:] + levels[:-1])
    gaps = np.diff(levels)
    for z in (1.0, 2.0, 2.8):
        near = np.abs(mid - z) < 0.05
        assert np.median(gaps[near]) == pytest.approx(c * z * z, rel=0.05)
    # Error never exceeds half a step (the last levels round past max_range: invalid).
    ok = np.isfinite(out)
    assert ok.mean() > 0.99
    err = np.abs(out[ok].astype(np.float64) - ramp[ok])
    assert np.all(err <= 0.5 * c * ramp[ok].astype(np.float64) ** 2 * 1.01 + 1e-6)
    # The measurement recovers c.
    steps = ss.quantisation_steps(ss.as_depth(out), min_pixels=100)
    assert ss.fit_z2_step(steps) == pytest.approx(c, rel=0.1)


def test_stereo_shadow_left_of_foreground():
    baseline = 0.065
    out = apply_depth_noise(_square(), SensorNoise(**{**QUIET.__dict__,
                                                      "stereo_baseline": baseline}), 0, fx=FX)
    holes = np.isnan(out)
    width = FX * baseline * (1 / 0.6 - 1 / 1.0)  # 26 px
    row = holes[60]
    assert not row[60:].any()  # nothing on or right of the foreground
    assert row[:60].sum() == pytest.approx(width, abs=1.5)
    assert row[60 - int(width) + 1 : 60].all()
    assert not holes[:40].any() and not holes[80:].any()
    runs = ss.shadow_runs(ss.as_depth(out), FX)
    assert runs["far_left"].all()
    assert np.median(runs["baseline"]) == pytest.approx(baseline, rel=0.05)


def test_edge_mix_makes_mixed_pixels():
    clean = _square()
    quiet = ss.flying_pixel_stats(ss.as_depth(apply_depth_noise(clean, QUIET, 0)))
    assert quiet["jump_pixels"] > 0 and quiet["flying"] == 0
    mixed = apply_depth_noise(clean, SensorNoise(**{**QUIET.__dict__, "edge_mix": 1.0,
                                                    "edge_mix_px": 2}), 0)
    stats = ss.flying_pixel_stats(ss.as_depth(mixed))
    assert stats["flying"] / stats["jump_pixels"] > 0.5
    # Away from the edge nothing changes.
    assert np.array_equal(mixed[50:70, 70:90], clean[50:70, 70:90])
    assert np.array_equal(mixed[:30], clean[:30])


def test_fattening_grows_near_surface():
    out = apply_depth_noise(_square(), SensorNoise(**{**QUIET.__dict__, "fattening_px": 2}), 0)
    near = np.isclose(out, 0.6)
    assert near.sum() == 44 * 44  # the 40 px square grown by 2 px on each side (box filter)


def _disk(h=100, w=120, r=20):
    yy, xx = np.mgrid[:h, :w]
    return (xx - 60) ** 2 + (yy - 50) ** 2 <= r * r


def test_perturb_mask_shift_and_grow():
    mask = _disk()
    diffs = []
    for seed in range(8):
        shifted = perturb_mask(mask, seed, shift_px=3.0, grow_px=0)
        assert shifted.sum() == mask.sum()  # a pure shift far from the border
        rows, cols = np.nonzero(shifted)
        r0, c0 = np.nonzero(mask)
        assert np.hypot(cols.mean() - c0.mean(), rows.mean() - r0.mean()) <= 3.0 + 0.75
        diffs.append((shifted ^ mask).sum())
    assert max(diffs) > 0
    sizes = {int(perturb_mask(mask, s, shift_px=0.0, grow_px=2).sum()) for s in range(20)}
    assert min(sizes) < mask.sum() < max(sizes)  # eroded and dilated both happen
    perimeter = 2 * np.pi * 20
    assert max(sizes) - mask.sum() <= 2.5 * perimeter
    assert mask.sum() - min(sizes) <= 2.5 * perimeter
    a = perturb_mask(mask, 7, 2.0, 2)
    assert np.array_equal(a, perturb_mask(mask, 7, 2.0, 2))
    assert np.array_equal(perturb_mask(mask, 7, 0.0, 0), mask)
    tiny = np.zeros((20, 20), bool)
    tiny[10, 10] = True
    assert perturb_mask(tiny, 0, 0.0, 0).any()
    assert all(perturb_mask(tiny, s, 0.0, 3).any() for s in range(10))  # never erased


def test_jitter_box():
    box = (40, 30, 80, 70)
    seen = set()
    for seed in range(20):
        j = jitter_box(box, (120, 100), seed, box_px=3)
        assert all(abs(a - b) <= 3 for a, b in zip(j, box, strict=True))
        assert j == jitter_box(box, (120, 100), seed, box_px=3)
        seen.add(j)
    assert len(seen) > 10
    assert jitter_box((0, 0, 2, 2), (10, 10), 1, box_px=3)[0] >= 0
    assert jitter_box(box, (120, 100), 0, box_px=0) == box
    assert PromptNoise.none() == PromptNoise(0.0, 0, 0)


def test_realistic_scene():
    pytest.importorskip("pybullet")
    pytest.importorskip("trimesh")
    from sam3d_bench.scenes import make_tabletop_scene

    a = make_tabletop_scene(4, n_objects=2, width=160, height=120, noise=SensorNoise.realsense())
    b = make_tabletop_scene(4, n_objects=2, width=160, height=120, noise=SensorNoise.realsense())
    d = make_tabletop_scene(4, n_objects=2, width=160, height=120)
    assert np.array_equal(a.depth_m, b.depth_m, equal_nan=True)
    assert np.array_equal(a.depth_clean, d.depth_clean, equal_nan=True)
    assert not np.array_equal(a.depth_m, d.depth_m, equal_nan=True)
    assert np.isnan(a.depth_m).mean() > np.isnan(d.depth_m).mean()


def test_prompted_query_perturbs_each_object_the_same_way_every_time():
    """The benchmarks' imperfect prompts (bench_core, bench_grasp --sensor realsense)."""
    pytest.importorskip("pybullet")
    pytest.importorskip("trimesh")
    from sam3d_bench.scenes import make_tabletop_scene

    scene = make_tabletop_scene(4, n_objects=3, width=160, height=120)
    exact = scene.box_prompts(2)
    assert prompted_query(scene, "box", None, 2).objects[0].boxes == [exact[0]]
    noise = PromptNoise()
    jittered = [o.boxes[0] for o in prompted_query(scene, "box", noise, 2).objects]
    again = [o.boxes[0] for o in prompted_query(scene, "box", noise, 2).objects]
    assert jittered == again
    assert [b.object_id for b in jittered] == [b.object_id for b in exact]
    moved = 0
    for b, e in zip(jittered, exact, strict=True):
        sides = np.array([b.x_min - e.x_min, b.y_min - e.y_min, b.x_max - e.x_max,
                          b.y_max - e.y_max])
        assert np.all(np.abs(sides) <= noise.box_px)
        moved += int(np.any(sides != 0))
    assert moved >= 2
    masks = prompted_query(scene, "mask", noise).masks
    truth = [o.visible_mask for o in scene.objects]
    assert all(np.array_equal(a, b) for a, b in
               zip(masks, prompted_query(scene, "mask", noise).masks, strict=True))
    assert any(not np.array_equal(a, t) for a, t in zip(masks, truth, strict=True))
    with pytest.raises(ValueError, match="mode"):
        prompted_query(scene, "points", noise)


def test_realsense_preset_matches_real_frames():
    frames = ss.load_rgbd_folder(require_real_rgbd())
    assert len(frames) >= 5
    s = ss.summarise(frames)
    rs = SensorNoise.realsense()
    assert s["z2_step_per_m"] == pytest.approx(rs.z_quant_per_m, rel=0.2)
    assert s["shadow_baseline_m"] == pytest.approx(rs.stereo_baseline, rel=0.25)
    assert s["shadow_far_left_fraction"] > 0.55  # shadows are one-sided, as modelled
    # Colour-drawn masks sit a couple of pixels off the depth silhouette.
    assert s["mask_shift_abs_median_px"] == pytest.approx(rs.misregistration_px, abs=1.0)
    assert s["ring_far_fraction"] > 0.1
    # Dark pixels lose depth more often; the excess matches the ramp's mean over luma 0-32.
    by = s["hole_by_luma"]
    excess = by["0-32"][0] - by["64-128"][0]
    ramp_mean = rs.dark_dropout * (rs.dark_luma - 16.0) / rs.dark_luma
    assert excess == pytest.approx(ramp_mean, rel=0.5)
    assert s["hole_saturated"][0] <= by["64-128"][0] + 0.02  # no specular excess measured
    assert 0.3 < s["flying_fraction"] < 0.7
