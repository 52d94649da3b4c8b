"""Analytic parallel-jaw grasps on completed object meshes (numpy + scipy, CPU, deterministic).

For each object (its closed mesh in the camera optical frame, from the frame contract):

1. **Antipodal lines.** Surface points are sampled (area-weighted); from each, the line along
   its normal is intersected with the mesh (Möller–Trumbore on the faces near the line: those
   whose centroid lies within the face's own reach of it). The outermost two hits are the
   finger contacts; both contact normals must lie in the friction cone (``atan(friction)``)
   of the closing line and the width must fit the gripper.
2. **Approaches.** Around each closing line, approach directions are sampled on the circle
   orthogonal to it, starting from the preferred approach (default: from above, i.e. against
   the support plane normal; without a plane, along the camera's viewing direction +z, i.e.
   from the camera's side). Approaches more than ``max_approach_angle_deg`` from the preferred
   one are dropped.
3. **Score** in ``[0, 1]`` (weighted mean): contacts on *observed* surface (a contact projects
   into the object's mask where the measured point lies within ``observed_tolerance``), a
   short lever of the centre of mass (mesh volume centroid) about the closing line (its
   offset across the line and across gravity, which the pads' friction must hold; without a
   support plane, its distance from the line), approach near the preferred one, contact
   normals well inside the friction cone.
   Steps 1–3 run in rounds of ``num_samples`` first contacts until ``top_k`` grasps pass
   step 4 or ``max_samples`` were drawn.
4. **Checks**, best candidates first, in small batches until ``top_k`` survive: the finger pads
   are re-centred on the object's extent between them (fingers of a parallel gripper close
   symmetrically, so the grasp origin is the midpoint of the actual contacts); the object must
   not be wider higher up the fingers than at the pads; the fingers (open to the pre-grasp
   opening), the palm and the straight pre-grasp → grasp path must keep clear of the support
   plane, of the object itself, of the other objects' completed meshes and of the observed scene
   points (the pointmap minus this object's mask and minus the support plane). Non-maximum
   suppression keeps grasps that differ in position or orientation.

Everything is a function of ``seed`` and the object id (``np.random.default_rng``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from sam3d_ros.core import conventions
from sam3d_ros.core.cancellation import check_cancelled
from sam3d_ros.core.object_pool import map_objects, resolve_workers
from sam3d_ros.core.support_plane import fit_support_plane
from sam3d_ros.core.types import Frame, Grasp, ObjectReconstruction

_FACE_CLUSTER_CELL = 0.02
"""Grid cell (metres) of the face clusters of the ray casts' broad phase (_FaceClusters):
a few dozen faces of a 3.5 mm voxel mesh each."""


@dataclass(frozen=True)
class GripperModel:
    """A parallel-jaw gripper as boxes in the grasp frame (metres).

    Defaults: Franka Hand. From ``franka_description`` (hand.xacro): finger joints at
    ``z = 0.0584`` above the hand link, TCP at ``z = 0.1034``; stroke 0.08 m (datasheet). The
    finger cross-section (about 2 cm wide, 1.2 cm thick) and the hand body box (about 20 × 6 cm)
    are commonly cited approximations of the meshes, not exact dimensions.

    Grasp frame: the contact points are at ``z = 0``; the fingertips reach ``contact_depth``
    beyond them (``+z``); fingers span ``z ∈ [contact_depth - finger_length, contact_depth]``;
    the palm (hand body) lies behind the fingers.
    """

    max_opening: float = 0.08
    finger_length: float = 0.054
    """From the hand body to the fingertip, pads included."""
    finger_width: float = 0.02
    """Along the grasp x axis."""
    finger_thickness: float = 0.012
    """Along the closing (y) axis."""
    contact_depth: float = 0.009
    """How far the fingertips reach past the contact points (the pads' centre)."""
    pad_length: float = 0.018
    """Length of the contact pads, from the fingertips."""
    palm_depth: float = 0.06
    """Hand body along x."""
    palm_width: float = 0.204
    """Hand body along y (the closing axis)."""
    palm_height: float = 0.0584
    """Hand body along z (from the end-effector link to the fingers)."""

    @property
    def tcp_offset(self) -> float:
        """Distance from the end-effector link (back of the palm) to the grasp origin along z."""
        return self.palm_height + self.finger_length - self.contact_depth

    def boxes(self, opening: Any) -> np.ndarray:
        """``(..., 3, 2, 3)`` ``[lo, hi]`` of finger +y, finger −y and palm, grasp frame.

        ``opening`` (scalar or array) is the gap between the fingers' inner faces.
        """
        o = np.asarray(opening, dtype=np.float64) / 2
        fw, ft = self.finger_width / 2, self.finger_thickness
        z_tip = self.contact_depth
        z_base = z_tip - self.finger_length
        out = np.empty(o.shape + (3, 2, 3))
        out[..., 0, 0, :] = [-fw, 0.0, z_base]
        out[..., 0, 1, :] = [fw, 0.0, z_tip]
        out[..., 0, 0, 1], out[..., 0, 1, 1] = o, o + ft
        out[..., 1, :, :] = out[..., 0, :, :]
        out[..., 1, 0, 1], out[..., 1, 1, 1] = -o - ft, -o
        out[..., 2, 0, :] = [-self.palm_depth / 2, -self.palm_width / 2, z_base - self.palm_height]
        out[..., 2, 1, :] = [self.palm_depth / 2, self.palm_width / 2, z_base]
        return out


@dataclass
class _Weights:
    observed: float = 0.25
    centre_of_mass: float = 0.30
    approach: float = 0.30
    friction: float = 0.15


@dataclass
class _Target:
    """One object's geometry in the camera frame."""

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    areas: np.ndarray
    centre_of_mass: np.ndarray
    radius: float
    triangles: np.ndarray
    """(F, 3, 3) corners of the faces, for the ray casts."""
    centroids: np.ndarray
    reach_sq: np.ndarray
    """Squared largest centroid-corner distance of each face."""
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    clusters: Optional["_FaceClusters"] = None


@dataclass
class _FaceClusters:
    """The faces grouped by the grid cell of their centroid, for the ray casts' broad phase.

    A line can pass through a face only within the face's reach of its centroid, hence within
    ``radius`` of its cluster's centre: the lines are tested against the clusters first, then
    against the faces of the clusters they pass.
    """

    centres: np.ndarray
    """(C, 3) mean centroid of each cluster."""
    radius_sq: np.ndarray
    """(C,) squared largest ``|centroid - centre| + reach`` of the cluster's faces."""
    start: np.ndarray
    """(C + 1,) where each cluster's faces begin in ``faces``."""
    faces: np.ndarray
    """(F,) face indices, cluster by cluster."""

    @classmethod
    def of(cls, centroids: np.ndarray, reach_sq: np.ndarray, cell: float) -> "_FaceClusters":
        flat = _voxel_keys(centroids, cell)
        faces = np.argsort(flat, kind="stable")
        sorted_keys = flat[faces]
        start = np.r_[0, np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1, len(faces)]
        counts = np.diff(start)
        centres = np.add.reduceat(centroids[faces], start[:-1], axis=0) / counts[:, None]
        # reach as the faces' test takes it (its 1e-10 m² slack included): a superset of it
        spread = (np.linalg.norm(centroids[faces] - np.repeat(centres, counts, axis=0), axis=1)
                  + np.sqrt(reach_sq[faces] + 1e-10))
        radius = np.maximum.reduceat(spread, start[:-1])
        return cls(centres, radius ** 2, start, faces)


class AnalyticGraspPlanner:
    """Antipodal parallel-jaw grasps with collision checks; see the module docstring.

    Args:
        gripper: the gripper geometry (default :class:`GripperModel`, a Franka Hand).
        top_k: grasps kept per object.
        friction: Coulomb friction coefficient of the friction cone.
        num_samples: surface points tried as first contacts per round.
        max_samples: first contacts drawn per object at most: rounds of ``num_samples`` go on
            until ``top_k`` grasps pass the checks. Measured with ``bench_grasp.py``: one round
            of 64 left 17 of 270 objects without a grasp, most of them because too few of
            their 64 lines had both contacts in the friction cone (a voxel mesh's steps).
        num_approaches: approach directions per closing line.
        preferred_approach: approach direction (camera frame, the way the gripper moves);
            ``None`` = against the support plane normal (from above) when a plane is known,
            else the camera's viewing direction ``[0, 0, 1]`` (from the camera's side).
        max_approach_angle_deg: approaches further from the preferred one are not used.
        approach_distance: length of the straight pre-grasp → grasp path checked for collisions.
        opening_margin: the fingers open to ``width + 2 · opening_margin`` (at most the maximum
            opening) before closing; also the minimum free space each side.
        clearance: collision margin around the gripper boxes and above the support plane.
        plane_band: scene points closer than this to the support plane are the plane's (which
            is checked analytically), not obstacles.
        observed_tolerance: a contact is observed when the measured point at its pixel lies
            within this distance.
        centre_of_mass_scale: lever of the centre of mass about the closing line at which
            that score term falls to ``1/e`` (without a support plane: its distance from the
            line).
        nms_distance / nms_angle_deg: a grasp closer than both to a better one is suppressed.
        check_batch: candidates collision-checked at once.
        workers: objects planned at once on this many threads (0 or ``"auto"``: the cores, at
            most four; :mod:`~sam3d_ros.core.object_pool`); the grasps are the same whatever
            the count.
    """

    name = "analytic"

    def __init__(
        self,
        gripper: Optional[GripperModel] = None,
        top_k: int = 10,
        friction: float = 0.5,
        num_samples: int = 64,
        max_samples: int = 256,
        num_approaches: int = 16,
        preferred_approach: Optional[Sequence[float]] = None,
        max_approach_angle_deg: float = 90.0,
        approach_distance: float = 0.06,
        opening_margin: float = 0.01,
        clearance: float = 0.003,
        plane_band: float = 0.01,
        observed_tolerance: float = 0.01,
        centre_of_mass_scale: float = 0.03,
        nms_distance: float = 0.02,
        nms_angle_deg: float = 30.0,
        check_batch: int = 24,
        weights: Optional[dict] = None,
        workers=1,
    ):
        """Configure the planner (see the class docstring)."""
        self.workers = resolve_workers(workers)
        self.gripper = gripper or GripperModel()
        if isinstance(self.gripper, dict):
            self.gripper = GripperModel(**self.gripper)
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        if friction <= 0:
            raise ValueError("friction must be positive")
        if num_samples < 1:
            raise ValueError("num_samples must be at least 1")
        self.top_k = int(top_k)
        self.friction = float(friction)
        self.num_samples = int(num_samples)
        self.max_samples = max(int(max_samples), self.num_samples)
        self.num_approaches = int(num_approaches)
        self.preferred_approach = (
            None if preferred_approach is None
            else conventions._unit(np.asarray(preferred_approach, dtype=np.float64),
                                   "preferred_approach")
        )
        self.max_approach_angle_deg = float(max_approach_angle_deg)
        self.approach_distance = float(approach_distance)
        self.opening_margin = float(opening_margin)
        self.clearance = float(clearance)
        self.plane_band = float(plane_band)
        self.observed_tolerance = float(observed_tolerance)
        self.centre_of_mass_scale = float(centre_of_mass_scale)
        self.nms_distance = float(nms_distance)
        self.nms_angle_deg = float(nms_angle_deg)
        self.check_batch = int(check_batch)
        self.weights = _Weights(**(weights or {}))

    # ------------------------------------------------------------------ public

    def plan(
        self,
        frame: Frame,
        objects: Sequence[ObjectReconstruction],
        seed: int,
        support_plane: Optional[Any] = None,
    ) -> List[List[Grasp]]:
        """Grasps per object (same order as ``objects``), best first; see the module docstring."""
        if not objects:
            return []
        plane = support_plane
        if plane is None:
            plane = self.fit_plane(frame, objects)
        targets = map_objects(lambda o: self._target(o, seed), objects, self.workers)
        scene = self._scene_points(frame, plane)

        def one(i: int) -> List[Grasp]:
            check_cancelled()
            return self.plan_object(frame, objects, i, targets, scene, plane, seed)

        return map_objects(one, range(len(objects)), self.workers)

    @staticmethod
    def fit_plane(frame: Frame, objects: Sequence[ObjectReconstruction]) -> Optional[Any]:
        """Support plane from the pointmap without the objects (as the reconstruction does)."""
        if frame.points is None:
            return None
        points = np.asarray(frame.points)
        union = np.zeros(points.shape[:2], dtype=bool)
        for obj in objects:
            if tuple(obj.region.image_shape) == union.shape:
                obj.region.paste_into(union)
        sub_union = ndimage.binary_dilation(union[::4, ::4], iterations=2)
        return fit_support_plane(points[::4, ::4], valid=~sub_union, rng=0)

    # ------------------------------------------------------------------ geometry

    def _target(self, obj: ObjectReconstruction, seed: int) -> Optional[_Target]:
        verts = np.asarray(obj.mesh.vertices, dtype=np.float64).reshape(-1, 3)
        faces = np.asarray(obj.mesh.faces, dtype=np.int64).reshape(-1, 3)
        if len(verts) < 4 or len(faces) < 4:
            return None
        q, t, s = conventions.quat_normalize(np.asarray(obj.rotation, np.float64).reshape(4)), \
            np.asarray(obj.translation, np.float64).reshape(3), conventions.scale_vector(obj.scale)
        v = conventions.canonical_to_camera(verts, q, t, s)
        a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
        cross = np.cross(b - a, c - a)
        double_area = np.linalg.norm(cross, axis=1)
        keep = double_area > 1e-12
        if keep.sum() < 4:
            return None
        faces, a, b, c, cross, double_area = (
            faces[keep], a[keep], b[keep], c[keep], cross[keep], double_area[keep])
        normals = cross / double_area[:, None]
        # Signed volume of the closed mesh; negative = faces wound inwards, flip the normals.
        tet = np.einsum("ij,ij->i", a, np.cross(b, c)) / 6.0
        volume = tet.sum()
        if volume < 0:
            normals = -normals
        if abs(volume) > 1e-9:
            com = (tet[:, None] * (a + b + c)).sum(axis=0) / (4.0 * volume)
        else:  # open or flat mesh: area-weighted centroid
            com = (double_area[:, None] * (a + b + c)).sum(axis=0) / (3.0 * double_area.sum())
        triangles = np.stack([a, b, c], axis=1)
        centroids = (a + b + c) / 3.0
        reach_sq = (np.linalg.norm(triangles - centroids[:, None], axis=2).max(axis=1)) ** 2
        target = _Target(v, faces, normals, double_area / 2, com,
                         float(np.linalg.norm(v - v.mean(axis=0), axis=1).max()),
                         triangles, centroids, reach_sq,
                         clusters=_FaceClusters.of(centroids, reach_sq, _FACE_CLUSTER_CELL))
        # Dense surface points for the pad and collision checks (vertices + area samples).
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(obj.object_id) & 0xFFFF, 1])
        area = target.areas.sum()
        n = int(np.clip(area / 0.004 ** 2, 400, 2500))
        samples = self._surface_samples(target, n, rng)[0]
        pts = np.concatenate([v, samples])
        target.points = _voxel_down(pts, 0.004)
        return target

    @staticmethod
    def _surface_samples(target: _Target, n: int, rng: np.random.Generator):
        cdf = np.cumsum(target.areas)
        f = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"),
                       len(cdf) - 1)
        r1, r2 = rng.random(n), rng.random(n)
        s = np.sqrt(r1)
        tri = target.vertices[target.faces[f]]
        pts = (1 - s)[:, None] * tri[:, 0] + (s * (1 - r2))[:, None] * tri[:, 1] \
            + (s * r2)[:, None] * tri[:, 2]
        return pts, target.normals[f]

    def _scene_points(self, frame: Frame, plane: Optional[Any]):
        """Observed points (subsampled) with their pixel, excluding the support plane."""
        if frame.points is None:
            return None
        pts = np.asarray(frame.points, dtype=np.float32)
        step = max(1, int(round(max(pts.shape[:2]) / 320)))
        rows, cols = np.mgrid[0:pts.shape[0]:step, 0:pts.shape[1]:step]
        sub = pts[rows, cols].reshape(-1, 3).astype(np.float64)
        ok = np.isfinite(sub).all(axis=1)
        if plane is not None:
            with np.errstate(invalid="ignore"):
                ok &= (sub @ np.asarray(plane.normal, np.float64) + float(plane.offset)
                       > self.plane_band)
        return sub[ok], rows.reshape(-1)[ok], cols.reshape(-1)[ok], step

    # ------------------------------------------------------------------ per object

    def plan_object(self, frame, objects, index, targets, scene, plane, seed) -> List[Grasp]:
        """Grasps of ``objects[index]`` (see :meth:`plan`); ``targets`` from :meth:`_target`."""
        obj, target = objects[index], targets[index]
        if target is None:
            return []
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(obj.object_id) & 0xFFFF, 0])
        preferred = self._preferred(plane)
        obstacles = None  # built on the first round that has candidates
        accepted: List[Grasp] = []
        acc_pos: List[np.ndarray] = []
        acc_rot: List[np.ndarray] = []
        drawn = 0
        # Rounds of ``num_samples`` first contacts until ``top_k`` grasps pass or
        # ``max_samples`` were drawn: an object whose surface normals are noisy (a voxel mesh's
        # steps) or whose graspable part is small yields few antipodal lines per round.
        while len(accepted) < self.top_k and drawn < self.max_samples:
            if drawn:
                check_cancelled()
            count = min(self.num_samples, self.max_samples - drawn)
            drawn += count
            candidates = self._candidates(frame, obj, target, plane, preferred, rng, count)
            if candidates is None:
                continue
            if obstacles is None:
                obstacles = self._obstacles(obj, index, targets, scene, target)
            self._accept(frame, obj, target, plane, obstacles, candidates,
                         accepted, acc_pos, acc_rot)
        accepted.sort(key=lambda gr: -gr.score)  # stable: ties keep the check order
        return accepted

    def _candidates(self, frame, obj, target, plane, preferred, rng, count):
        """Scored candidate grasps from ``count`` first contacts, best first; ``None`` if none.

        Returns ``(rot, mid, width, friction_score, cos_app, order)``.
        """
        g = self.gripper
        # 1. antipodal lines
        p, n = self._surface_samples(target, count, rng)
        c1, c2, n1, n2 = self._antipodal(target, p, n)
        if len(c1) == 0:
            return None
        closing = c2 - c1
        width = np.linalg.norm(closing, axis=1)
        ok = (width > 0.002) & (width <= g.max_opening - 2 * self.clearance)
        closing = closing[ok] / width[ok, None]
        c1, c2, n1, n2, width = c1[ok], c2[ok], n1[ok], n2[ok], width[ok]
        cos_mu = 1.0 / np.sqrt(1.0 + self.friction ** 2)
        cos1 = -np.einsum("ij,ij->i", n1, closing)
        cos2 = np.einsum("ij,ij->i", n2, closing)
        ok = (cos1 >= cos_mu) & (cos2 >= cos_mu)
        if not ok.any():
            return None
        c1, c2, closing, width = c1[ok], c2[ok], closing[ok], width[ok]
        friction_score = np.clip((np.minimum(cos1[ok], cos2[ok]) - cos_mu) / (1 - cos_mu), 0, 1)

        # 2. approaches around each closing line, starting from the preferred direction
        y = closing
        e1 = preferred[None, :] - (y @ preferred)[:, None] * y
        bad = np.linalg.norm(e1, axis=1) < 1e-3
        if bad.any():  # closing line parallel to the preferred approach: any orthogonal start
            alt = np.where(np.abs(y[bad, 0:1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
            e1[bad] = alt - np.sum(alt * y[bad], axis=1, keepdims=True) * y[bad]
        e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
        e2 = np.cross(y, e1)
        angles = 2 * np.pi * np.arange(self.num_approaches) / self.num_approaches
        z = (np.cos(angles)[None, :, None] * e1[:, None, :]
             + np.sin(angles)[None, :, None] * e2[:, None, :])
        k = self.num_approaches
        z = z.reshape(-1, 3)
        y = np.repeat(y, k, axis=0)
        mid = np.repeat(0.5 * (c1 + c2), k, axis=0)
        width = np.repeat(width, k)
        friction_score = np.repeat(friction_score, k)
        cos_app = z @ preferred
        keep = cos_app >= np.cos(np.deg2rad(self.max_approach_angle_deg)) - 1e-9
        rot = np.stack([np.cross(y, z), y, z], axis=-1)
        if plane is not None:
            keep &= self._plane_clear(rot, mid, plane, g.max_opening)
        if not keep.any():
            return None
        rot, mid, width, friction_score, cos_app = (
            rot[keep], mid[keep], width[keep], friction_score[keep], cos_app[keep])

        # 3. score (contacts at the line ends; recomputed after re-centring below)
        score = self._score(frame, obj, target, rot, mid, width, friction_score, cos_app,
                            plane)[0]
        order = np.argsort(-score, kind="stable")
        return rot, mid, width, friction_score, cos_app, order

    def _accept(self, frame, obj, target, plane, obstacles, candidates, accepted, acc_pos,
                acc_rot) -> None:
        """4. Check ``candidates`` best first; append the survivors to ``accepted`` (NMS)."""
        rot, mid, width, friction_score, cos_app, order = candidates
        alive = np.ones(len(order), dtype=bool)  # not yet checked nor suppressed
        while len(accepted) < self.top_k:
            idx = order[alive[order]][:self.check_batch]
            if len(idx) == 0:
                break
            alive[idx] = False
            good, new_mid, new_width = self._check(rot[idx], mid[idx], target, obstacles, plane)
            if not good.any():
                continue
            idx, new_mid, new_width = idx[good], new_mid[good], new_width[good]
            scores, flags = self._score(frame, obj, target, rot[idx], new_mid, new_width,
                                        friction_score[idx], cos_app[idx], plane)
            quats = conventions.matrix_to_quat(rot[idx])
            for j, c in enumerate(idx):
                r, pos, w = rot[c], new_mid[j], float(new_width[j])
                if acc_pos and self._similar(pos[None], r[None], acc_pos, acc_rot)[0]:
                    continue
                contacts = np.stack([pos - 0.5 * w * r[:, 1], pos + 0.5 * w * r[:, 1]])
                accepted.append(Grasp(
                    position=pos.copy(), orientation=quats[j].copy(), width=w,
                    score=float(np.clip(scores[j], 0.0, 1.0)), object_id=int(obj.object_id),
                    contacts=contacts,
                    contacts_observed=flags[j].copy()))
                acc_pos.append(pos)
                acc_rot.append(r)
                if len(accepted) >= self.top_k:
                    break
            # candidates close to an accepted grasp need no check any more
            rest = np.flatnonzero(alive)
            if len(rest) and acc_pos:
                alive[rest[self._similar(mid[rest], rot[rest], acc_pos, acc_rot)]] = False

    def _similar(self, pos, rot, acc_pos, acc_rot) -> np.ndarray:
        """Whether each grasp is within the NMS distance and angle of an accepted one."""
        cos_nms = np.cos(np.deg2rad(self.nms_angle_deg))
        ap, ar = np.asarray(acc_pos), np.asarray(acc_rot)
        near = np.linalg.norm(pos[:, None] - ap[None], axis=2) < self.nms_distance
        same_z = np.einsum("ni,mi->nm", rot[:, :, 2], ar[:, :, 2]) > cos_nms
        # a parallel gripper is symmetric: closing along y or -y is the same grasp
        same_y = np.abs(np.einsum("ni,mi->nm", rot[:, :, 1], ar[:, :, 1])) > cos_nms
        return (near & same_z & same_y).any(axis=1)

    def _preferred(self, plane: Optional[Any]) -> np.ndarray:
        if self.preferred_approach is not None:
            return self.preferred_approach
        if plane is not None:
            return -np.asarray(plane.normal, dtype=np.float64)  # normal points up: come from above
        return np.array([0.0, 0.0, 1.0])

    def _antipodal(self, target: _Target, p: np.ndarray, n: np.ndarray):
        """Outermost mesh hits of the lines ``p + s·n``: contacts, normals (may drop lines)."""
        g = self.gripper
        reach = g.max_opening + 0.01
        origin = p + reach * n  # start outside the object, cast along -n
        direction = -n
        length = 2 * reach
        tri, centroids, reach_sq = target.triangles, target.centroids, target.reach_sq
        # Broad phase: the faces whose centroid lies within the face's own reach (largest
        # centroid-vertex distance) of the line; a line through a face passes that close to its
        # centroid. Two levels: the lines against the clusters of faces (a sphere around each,
        # see _FaceClusters), then against the faces of the clusters they pass, as squared
        # point-line distances. Testing every face against every line as matrix products (faces
        # × lines), as before, suits the small meshes of the synthetic scenes, but real objects
        # at 1280×720 give meshes of 25–40k faces: m2t2_0's six objects took 490 ms of ray
        # casts, 165 ms with the clusters (cProfile; the same contacts). A k-d tree of the
        # centroids queried at points stepped along each line was slower than the matrix
        # products (33 vs 28 ms per object p50 on bench_grasp scenes 0–19).
        cl = target.clusters
        ray_parts, face_parts = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        chunk = max(1, 2_000_000 // max(len(cl.centres), 1))
        for r0 in range(0, len(p), chunk):
            o, d = origin[r0:r0 + chunk], direction[r0:r0 + chunk]
            c_idx, r_idx = np.nonzero(_line_distance_sq(cl.centres, o, d)
                                      <= cl.radius_sq[:, None] + 1e-10)  # + (10 µm)²
            counts = cl.start[c_idx + 1] - cl.start[c_idx]
            first = np.repeat(cl.start[c_idx] - np.cumsum(counts) + counts, counts)
            f_idx = cl.faces[first + np.arange(counts.sum())]
            r_idx = np.repeat(r_idx, counts) + r0
            v = centroids[f_idx] - origin[r_idx]
            along = np.einsum("ij,ij->i", v, direction[r_idx])
            sq = np.einsum("ij,ij->i", v, v) - along ** 2
            near = sq <= reach_sq[f_idx] + 1e-10
            ray_parts.append(r_idx[near])
            face_parts.append(f_idx[near])
        ray, face = np.concatenate(ray_parts), np.concatenate(face_parts)
        t, ok = _ray_triangles(origin[ray], direction[ray], tri[face])
        ok &= (t >= 0) & (t <= length)
        ray, face, t = ray[ok], face[ok], t[ok]
        if len(t) == 0:
            empty = np.zeros((0, 3))
            return empty, empty, empty, empty
        order = np.lexsort((face, t, ray))  # equal t (an edge): the lower face first
        ray, face, t = ray[order], face[order], t[order]
        first = np.flatnonzero(np.r_[True, ray[1:] != ray[:-1]])
        last = np.r_[first[1:] - 1, len(ray) - 1]
        two = last > first
        first, last = first[two], last[two]
        r = ray[first]
        c1 = origin[r] + t[first, None] * direction[r]
        c2 = origin[r] + t[last, None] * direction[r]
        return c1, c2, target.normals[face[first]], target.normals[face[last]]

    def _plane_clear(self, rot, mid, plane, opening) -> np.ndarray:
        """Whether all gripper boxes (and their pre-grasp positions) stay above the plane."""
        normal = np.asarray(plane.normal, dtype=np.float64)
        a = np.einsum("nij,i->nj", rot, normal)  # plane normal in each grasp frame
        height = mid @ normal + float(plane.offset)
        boxes = np.broadcast_to(self.gripper.boxes(opening), (len(mid), 3, 2, 3))
        # lowest corner of each box: per axis the lower of lo·a and hi·a
        low = np.minimum(boxes[:, :, 0] * a[:, None], boxes[:, :, 1] * a[:, None]).sum(2).min(1)
        # pre-grasp: the whole gripper moved back by approach_distance along z
        back = -self.approach_distance * a[:, 2]
        return height + low + np.minimum(back, 0.0) > self.clearance

    def _obstacles(self, obj, index, targets, scene, target) -> np.ndarray:
        """Other objects' mesh points and observed scene points near this object."""
        parts = [t.points for i, t in enumerate(targets) if i != index and t is not None]
        if scene is not None:
            pts, rows, cols, step = scene
            h, w = obj.region.image_shape
            if h > rows.max(initial=0) and w > cols.max(initial=0):
                # this object's pixels (grown by ~3 px for mixed edge pixels) are not obstacles
                parts.append(pts[~_own_pixels(obj.region, rows, cols, step, 3)])
            else:
                parts.append(pts)
        if not parts:
            return np.zeros((0, 3))
        allp = np.concatenate(parts)
        boxes = self.gripper.boxes(self.gripper.max_opening)
        corners = np.abs(boxes).max(axis=1)
        corners[:, 2] = np.maximum(np.abs(boxes[:, 0, 2] - self.approach_distance),
                                   np.abs(boxes[:, 1, 2]))
        reach = 2 * target.radius + float(np.linalg.norm(corners, axis=1).max()) \
            + self.clearance
        centre = target.vertices.mean(axis=0)
        near = np.linalg.norm(allp - centre, axis=1) < reach
        return _voxel_down(allp[near], 0.004)

    def _check(self, rot, mid, target, obstacles, plane):
        """Re-centre on the pads, then collision-check; returns (ok, position, width)."""
        g = self.gripper
        n = len(mid)
        local = _to_local(target.points, rot, mid)
        x, y, z = local[..., 0], local[..., 1], local[..., 2]
        in_x = np.abs(x) <= g.finger_width / 2
        pad = in_x & (z <= g.contact_depth) & (z >= g.contact_depth - g.pad_length)
        finger = in_x & (z <= g.contact_depth) & (z >= g.contact_depth - g.finger_length)
        big = 1e3
        y_pad_hi = np.where(pad, y, -big).max(axis=1)
        y_pad_lo = np.where(pad, y, big).min(axis=1)
        ok = pad.any(axis=1)
        shift = np.where(ok, 0.5 * (y_pad_hi + y_pad_lo), 0.0)
        width = np.where(ok, y_pad_hi - y_pad_lo, 0.0)
        # fingers touch first wherever the object is widest along them: that must be the pads
        yc = y - shift[:, None]
        half = 0.5 * width
        wider = finger & (np.abs(yc) > half[:, None] + 0.003)
        ok &= ~wider.any(axis=1)
        ok &= (width > 0.002) & (width <= g.max_opening - 2 * self.clearance)
        opening = np.minimum(width + 2 * self.opening_margin, g.max_opening)
        new_mid = mid + shift[:, None] * rot[:, :, 1]
        if plane is not None:
            ok &= self._plane_clear(rot, new_mid, plane, opening)
        boxes = g.boxes(opening)  # (n, 3, 2, 3)
        cl = self.clearance
        lo = boxes[:, :, 0] - cl
        hi = boxes[:, :, 1] + cl
        lo[:, :, 2] -= self.approach_distance  # swept along the approach path
        # the fingers' inner faces sweep only down to the open width, never into the object
        lo[:, 0, 1] = np.maximum(lo[:, 0, 1], opening / 2 - cl)
        hi[:, 1, 1] = np.minimum(hi[:, 1, 1], -opening / 2 + cl)
        # The collision tests, the bulk of the work, only for the candidates still standing
        # (about a third on real frames), obstacles only for those the object leaves free.
        live = np.flatnonzero(ok)
        hit = _points_in_boxes(np.stack([x[live], yc[live], z[live]], axis=-1),
                               lo[live], hi[live])
        ok[live[hit]] = False
        live = live[~hit]
        if len(obstacles) and len(live):
            hit = _points_in_boxes(_to_local(obstacles, rot[live], new_mid[live]),
                                   lo[live], hi[live])
            ok[live[hit]] = False
        return ok[:n], new_mid, width

    def _score(self, frame, obj, target, rot, mid, width, friction_score, cos_app, plane):
        """Scores in [0, 1] and the (n, 2) observed flags of the contacts."""
        w = self.weights
        y = rot[:, :, 1]
        contacts = np.stack([mid - 0.5 * width[:, None] * y, mid + 0.5 * width[:, None] * y], 1)
        flags = self._observed(frame, obj, contacts.reshape(-1, 3)).reshape(-1, 2)
        observed = flags.mean(1)
        d = target.centre_of_mass - mid
        if plane is not None:
            # Lifted, the object turns about the closing line under its weight, held only by
            # the pads' friction: the lever is the centre of mass's offset across the line and
            # across gravity (below the line it hangs; above it, it balances, which this
            # ignores). As the distance from the line (before), a top grasp over a tall box's
            # centre scored as badly as one at its far end, both nothing, and in the
            # simulation the end grasps turned out of the fingers. bench_grasp top-1, pipeline
            # / true meshes, distance -> lever: household 0.978 / 0.967 -> 0.989 / 0.989, with
            # the RealSense model 0.922 / 0.967 -> 0.978 / 0.989; random_urdfs 0.952 / 0.963
            # -> 0.933 / 0.948 (seeds 0-89; counting the height half as well: 0.941 / 0.963,
            # household no better). A closing line tilted up towards the vertical turns the
            # object about the horizontal axes instead, held by the pads' patch alone: there
            # the horizontal offset counts, in proportion to the tilt.
            up = np.asarray(plane.normal, np.float64)
            across = np.abs(np.einsum("ij,ij->i", d, np.cross(up, y)))
            level = d - np.outer(d @ up, up)
            lever = np.hypot(across, np.abs(y @ up) * np.linalg.norm(level, axis=1))
        else:
            lever = np.linalg.norm(d - np.einsum("ij,ij->i", d, y)[:, None] * y, axis=1)
        com = np.exp(-((lever / self.centre_of_mass_scale) ** 2))
        app = np.clip(cos_app, 0.0, 1.0)
        total = w.observed + w.centre_of_mass + w.approach + w.friction
        score = (w.observed * observed + w.centre_of_mass * com + w.approach * app
                 + w.friction * friction_score) / total
        return score, flags

    def _observed(self, frame: Frame, obj: ObjectReconstruction, pts: np.ndarray) -> np.ndarray:
        """Whether each point lies on measured surface of this object (mask + pointmap)."""
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
        out = np.zeros(len(pts), dtype=bool)
        k = frame.intrinsics
        if frame.points is None or k is None or len(pts) == 0:
            return out
        points = np.asarray(frame.points)
        mask = obj.region
        h, w = mask.image_shape
        r0, r1, c0, c1 = mask.bbox
        u, v = conventions.project(pts, k)
        u, v = np.rint(u), np.rint(v)
        front = np.isfinite(u) & np.isfinite(v)
        # a 3×3 neighbourhood: contacts on the silhouette project onto its edge pixels
        for dv in (-1, 0, 1):
            for du in (-1, 0, 1):
                uu, vv = u + du, v + dv
                # only pixels in the mask's box can be in the mask
                inside = front & (uu >= c0) & (uu < c1) & (vv >= r0) & (vv < r1)
                ui, vi = uu[inside].astype(np.int64), vv[inside].astype(np.int64)
                near = np.linalg.norm(points[vi, ui] - pts[inside], axis=1)
                hit = mask.pixels[vi - r0, ui - c0] & (near <= self.observed_tolerance)
                out[np.flatnonzero(inside)[hit]] = True
        return out


def _own_pixels(region, rows, cols, step: int, grow_px: int) -> np.ndarray:
    """Which sampled pixels lie in the object's mask grown by ``grow_px`` pixels.

    ``rows``, ``cols`` are multiples of ``step``; the growth is judged on that grid, over the
    mask's box only.
    """
    iterations = max(1, int(np.ceil(grow_px / step)))
    own = np.zeros(len(rows), dtype=bool)
    win, (a0, _, b0, _) = region.window((iterations + 1) * step)
    g0, h0 = -(-a0 // step), -(-b0 // step)  # the first grid row / column in the window
    grid = win[g0 * step - a0::step, h0 * step - b0::step]
    if grid.size == 0:
        return own
    grid = ndimage.binary_dilation(grid, iterations=iterations)
    gr, gc = rows // step - g0, cols // step - h0
    inside = (gr >= 0) & (gr < grid.shape[0]) & (gc >= 0) & (gc < grid.shape[1])
    own[inside] = grid[gr[inside], gc[inside]]
    return own


def _ray_triangles(origin, direction, tri) -> Tuple[np.ndarray, np.ndarray]:
    """Möller–Trumbore for paired rays and triangles: (t, hit)."""
    e1 = tri[:, 1] - tri[:, 0]
    e2 = tri[:, 2] - tri[:, 0]
    pvec = np.cross(direction, e2)
    det = np.einsum("ij,ij->i", e1, pvec)
    ok = np.abs(det) > 1e-14
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    tvec = origin - tri[:, 0]
    u = np.einsum("ij,ij->i", tvec, pvec) * inv
    qvec = np.cross(tvec, e1)
    v = np.einsum("ij,ij->i", direction, qvec) * inv
    t = np.einsum("ij,ij->i", e2, qvec) * inv
    eps = 1e-9
    ok &= (u >= -eps) & (v >= -eps) & (u + v <= 1 + eps)
    return t, ok


def _line_distance_sq(points: np.ndarray, origin: np.ndarray, direction: np.ndarray):
    """``(P, L)`` squared distances of points from lines ``origin + s·direction`` (unit)."""
    along = points @ direction.T - np.einsum("ij,ij->i", origin, direction)[None, :]
    return (np.einsum("ij,ij->i", points, points)[:, None] - 2.0 * (points @ origin.T)
            + np.einsum("ij,ij->i", origin, origin)[None, :] - along ** 2)


def _to_local(points: np.ndarray, rot: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """``(B, P, 3)`` coordinates of ``points`` in B frames ``(rot, origin)``, one matmul."""
    flat = rot.transpose(1, 0, 2).reshape(3, -1).astype(np.float32)  # x0 y0 z0 x1 y1 z1 ...
    local = (points.astype(np.float32) @ flat).reshape(len(points), len(rot), 3)
    local = local.transpose(1, 0, 2)
    return local - np.einsum("bij,bi->bj", rot, origin).astype(np.float32)[:, None, :]


def _points_in_boxes(local: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``local`` (B, P, 3), boxes ``lo``/``hi`` (B, K, 3): whether any point is in any box."""
    out = np.zeros(local.shape[0], dtype=bool)
    lo, hi = lo.astype(local.dtype), hi.astype(local.dtype)
    for k in range(lo.shape[1]):
        inside = (local[..., 0] >= lo[:, None, k, 0]) & (local[..., 0] <= hi[:, None, k, 0])
        for axis in (1, 2):
            inside &= local[..., axis] >= lo[:, None, k, axis]
            inside &= local[..., axis] <= hi[:, None, k, axis]
        out |= inside.any(axis=1)
    return out


def _voxel_down(points: np.ndarray, size: float) -> np.ndarray:
    """One point per occupied voxel (the first, in input order: deterministic)."""
    if len(points) == 0:
        return points.reshape(0, 3)
    _, first = np.unique(_voxel_keys(points, size), return_index=True)
    return points[np.sort(first)]


def _voxel_keys(points: np.ndarray, size: float) -> np.ndarray:
    """One int64 key per point naming its voxel of edge ``size`` (points non-empty)."""
    keys = np.floor(points / size).astype(np.int64)
    keys -= keys.min(axis=0)
    span = keys.max(axis=0) + 1
    return (keys[:, 0] * span[1] + keys[:, 1]) * span[2] + keys[:, 2]
