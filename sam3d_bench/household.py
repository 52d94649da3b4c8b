"""Household objects of YCB sizes for the synthetic scenes: boxes, cans and bottles.

``pybullet_data/random_urdfs`` (the default object set of
:func:`sam3d_bench.scenes.make_tabletop_scene`) are irregular procedural shapes, most of them
a few centimetres tall. The objects a robot picks in a kitchen or a warehouse are mostly boxes,
cans and bottles standing on the table, several times taller than wide, which a parallel
gripper holds across their narrow side. This catalogue models such objects on the published
sizes of the YCB object set (Calli et al. 2015; the boxes and cans of ``../shared/real_rgbd``
are YCB objects), as simple solids, each in the poses a Franka Hand (8 cm opening) can pick it
from: a cracker box standing (7.2 cm across), a sugar box standing and on its narrow side, a
soup can, ...

Each object gets an id from :data:`HOUSEHOLD_BASE` up, so the scene code can treat it like a
``random_urdfs`` id: :func:`urdf_path` writes its mesh (OBJ) and URDF once into a per-user cache
folder named after their content (a temporary name, then renamed), and :func:`mesh` returns
its surface. Like the ``random_urdfs`` files, the URDF holds only geometry and a nominal
0.1 kg: pybullet computes the inertia from the collision shape, and the grasp simulation
gives every object its own mass and friction (:mod:`sam3d_bench.grasp_sim`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import List, Tuple

import numpy as np

HOUSEHOLD_BASE = 1000
"""Ids of the household objects start here (``random_urdfs`` ids stay below 1000)."""

@dataclass(frozen=True)
class HouseholdObject:
    """One object of the catalogue (metres; standing on the table, z up)."""

    name: str
    shape: str
    """``box`` (``size`` = x, y, z extents) or ``cylinder`` (``size`` = diameter, height)."""
    size: Tuple[float, ...]
    rgba: Tuple[float, float, float, float]


CATALOGUE: List[HouseholdObject] = [
    HouseholdObject("cracker_box", "box", (0.072, 0.163, 0.213), (0.80, 0.12, 0.10, 1.0)),
    HouseholdObject("sugar_box", "box", (0.045, 0.092, 0.176), (0.92, 0.88, 0.55, 1.0)),
    HouseholdObject("sugar_box_on_side", "box", (0.045, 0.176, 0.092), (0.92, 0.88, 0.55, 1.0)),
    HouseholdObject("tomato_soup_can", "cylinder", (0.066, 0.101), (0.75, 0.15, 0.12, 1.0)),
    HouseholdObject("mustard_bottle", "box", (0.058, 0.095, 0.191), (0.95, 0.80, 0.10, 1.0)),
    HouseholdObject("pudding_box", "box", (0.035, 0.110, 0.089), (0.55, 0.35, 0.20, 1.0)),
    HouseholdObject("gelatin_box", "box", (0.028, 0.085, 0.073), (0.85, 0.30, 0.35, 1.0)),
    HouseholdObject("potted_meat_can", "box", (0.050, 0.097, 0.082), (0.25, 0.35, 0.70, 1.0)),
    HouseholdObject("bleach_cleanser", "box", (0.065, 0.098, 0.250), (0.90, 0.90, 0.92, 1.0)),
    HouseholdObject("foam_brick", "box", (0.050, 0.075, 0.050), (0.80, 0.20, 0.15, 1.0)),
    HouseholdObject("rubiks_cube", "box", (0.057, 0.057, 0.057), (0.20, 0.60, 0.30, 1.0)),
    HouseholdObject("cup", "cylinder", (0.060, 0.070), (0.30, 0.55, 0.85, 1.0)),
    HouseholdObject("small_cup", "cylinder", (0.052, 0.060), (0.85, 0.55, 0.20, 1.0)),
    HouseholdObject("water_bottle", "cylinder", (0.055, 0.200), (0.60, 0.80, 0.90, 1.0)),
]


def is_household(object_id: int) -> bool:
    """Whether ``object_id`` names a catalogue object."""
    return HOUSEHOLD_BASE <= int(object_id) < HOUSEHOLD_BASE + len(CATALOGUE)


def household_ids() -> List[int]:
    """Every catalogue id."""
    return [HOUSEHOLD_BASE + i for i in range(len(CATALOGUE))]


def entry(object_id: int) -> HouseholdObject:
    """The catalogue entry of ``object_id``."""
    if not is_household(object_id):
        raise ValueError(f"{object_id} is no household object id "
                         f"({HOUSEHOLD_BASE}-{HOUSEHOLD_BASE + len(CATALOGUE) - 1})")
    return CATALOGUE[int(object_id) - HOUSEHOLD_BASE]


@lru_cache(maxsize=64)
def mesh(object_id: int) -> Tuple[np.ndarray, np.ndarray, Tuple[float, float, float, float]]:
    """Closed surface (link frame: centred, z up, read-only arrays) and colour of an object."""
    import trimesh

    e = entry(object_id)
    if e.shape == "box":
        solid = trimesh.creation.box(extents=e.size)
    elif e.shape == "cylinder":
        solid = trimesh.creation.cylinder(radius=e.size[0] / 2, height=e.size[1], sections=48)
    else:  # pragma: no cover - the catalogue holds only these
        raise ValueError(f"unknown shape {e.shape!r}")
    vertices = np.asarray(solid.vertices, dtype=np.float64)
    faces = np.asarray(solid.faces, dtype=np.int64)
    vertices.setflags(write=False)
    faces.setflags(write=False)
    return vertices, faces, e.rgba


@lru_cache(maxsize=64)
def _files(object_id: int) -> Tuple[str, str, str]:
    """The object's name, OBJ text and URDF text."""
    import trimesh

    e = entry(object_id)
    vertices, faces, rgba = mesh(object_id)
    obj_text = trimesh.exchange.obj.export_obj(trimesh.Trimesh(vertices, faces, process=False))
    colour = " ".join(f"{c:g}" for c in rgba)
    # The inertia must be present for pybullet to parse the link; it is ignored (computed from
    # the collision shape) unless the URDF is loaded with URDF_USE_INERTIA_FROM_FILE.
    urdf_text = f"""<?xml version="1.0"?>
<robot name="{e.name}">
  <link name="base_link">
    <inertial>
      <origin xyz="0 0 0"/>
      <mass value="0.1"/>
      <inertia ixx="0" ixy="0" ixz="0" iyy="0" iyz="0" izz="0"/>
    </inertial>
    <visual>
      <origin xyz="0 0 0"/>
      <geometry><mesh filename="{e.name}.obj" scale="1 1 1"/></geometry>
      <material name="{e.name}"><color rgba="{colour}"/></material>
    </visual>
    <collision>
      <origin xyz="0 0 0"/>
      <geometry><mesh filename="{e.name}.obj" scale="1 1 1"/></geometry>
    </collision>
  </link>
</robot>
"""
    return e.name, obj_text, urdf_text


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def urdf_path(object_id: int) -> str:
    """Path of the object's URDF (written on first use; its OBJ beside it).

    The folder is named after a hash of both files' text, so a change to the catalogue, the
    mesh or the template never reads stale files; it is per user (``/tmp`` is shared).
    """
    name, obj_text, urdf_text = _files(object_id)
    key = hashlib.sha1((obj_text + urdf_text).encode()).hexdigest()[:12]
    uid = os.getuid() if hasattr(os, "getuid") else 0
    folder = Path(tempfile.gettempdir()) / f"sam3d_bench_household_{uid}" / f"{name}_{key}"
    urdf, obj = folder / f"{name}.urdf", folder / f"{name}.obj"
    if urdf.exists() and obj.exists():
        return str(urdf)
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomically(obj, obj_text)  # the mesh first: a URDF never names a missing file
    _write_atomically(urdf, urdf_text)
    return str(urdf)
