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

Everything is deterministic given the random generator (a seed or ``numpy.random.Generator``).
Invalid pixels are ``NaN``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

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

    def sigma(self, z: np.ndarray) -> np.ndarray:
        """Axial noise standard deviation (metres) at depth ``z`` (metres)."""
        z = np.asarray(z, dtype=np.float64)
        return self.sigma_0 + self.sigma_k * (z - self.z_0) ** 2


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
    depth: np.ndarray, noise: Optional[SensorNoise], seed: SeedLike = 0
) -> np.ndarray:
    """Return a noisy copy (float32 metres, NaN invalid) of a clean metric depth image.

    Args:
        depth: H×W clean depth in metres (``z`` along the optical axis), NaN/inf where no return.
        noise: the model; ``None`` returns the clean depth (out-of-range pixels still invalid).
        seed: integer seed or generator; the same seed gives the same noise.
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
    if noise.flying_pixel > 0:
        # The farthest valid 4-neighbour (np.roll wraps at the border: harmless there).
        far = out.copy()
        for axis, step in ((0, 1), (0, -1), (1, 1), (1, -1)):
            far = np.fmax(far, np.roll(out, step, axis))
        fly = edges & valid & np.isfinite(far) & (mix_u < noise.flying_pixel)
        out = np.where(fly, alpha * out + (1.0 - alpha) * far, out)
    noisy = out + gauss * noise.sigma(np.where(valid, out, noise.z_0))
    if noise.quantisation > 0:
        noisy = np.round(noisy / noise.quantisation) * noise.quantisation
    drop = np.where(edges, drop_u < noise.edge_dropout, drop_u < noise.random_dropout)
    drop |= (noisy < noise.min_range) | (noisy > noise.max_range)
    noisy[drop | ~valid] = np.nan
    return noisy.astype(np.float32)


def apply_rgb_noise(
    rgb: np.ndarray, noise: Optional[SensorNoise], seed: SeedLike = 0
) -> np.ndarray:
    """Return a copy of an H×W×3 uint8 image with Gaussian pixel noise (``noise.rgb_sigma``)."""
    if noise is None or noise.rgb_sigma <= 0:
        return np.array(rgb, dtype=np.uint8, copy=True)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    noisy = rgb.astype(np.float32) + rng.normal(0.0, noise.rgb_sigma, size=rgb.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
