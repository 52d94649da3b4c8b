"""Synthetic RGB-D tabletop scenes with ground truth, a depth noise model and accuracy metrics.

Needs ``pybullet`` (scenes), ``trimesh`` (ground-truth meshes) and ``scipy`` (metrics); import
the submodules directly to avoid loading what you do not use.
"""

from sam3d_bench.sensor import SensorNoise, apply_depth_noise, apply_rgb_noise

__all__ = ["SensorNoise", "apply_depth_noise", "apply_rgb_noise"]
