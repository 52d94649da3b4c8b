"""pip-installable ROS-free core of sam3d_ros (reconstruction without ROS).

The ROS 2 package is built with colcon / ament_cmake from ``CMakeLists.txt`` and ``package.xml``;
this file is only for people who want ``sam3d-reconstruct`` and the Python API without ROS::

    pip install .                 # core: numpy, scipy, pillow, OpenCV (headless)
    pip install .[bench]          # what sam3d_bench/ (source tree only) needs: pybullet, trimesh
    pip install .[dev]            # tests and lint

It ships ``sam3d_ros.core`` and ``sam3d_ros.backends`` only: the ROS shell ``sam3d_ros.ros`` is
installed by colcon (or tools/bootstrap.sh), and ``sam3d_bench`` (synthetic scenes, sensor model,
metrics, real-frame evaluation) stays in the source tree for tests and benchmarks. SAM 3D Objects is not on PyPI and is installed by the user (its
own license); the ``sam3`` extra installs what the SAM 3 segmentation adapter imports.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "sam3d_ros" / "__init__.py").read_text(), re.M
).group(1)



class BuildWithInterfaces(build_py):
    """Also ship the .msg files recordings need (msg/, pip_only_interfaces/) as package data.

    ``sam3d-reconstruct --bag`` registers them in its rosbags type store without ROS
    (``sam3d_ros/core/recording/typestore.py`` looks for them under ``interfaces/``).
    """

    def run(self):
        """Build the package, then copy the interface definitions into it."""
        super().run()
        target = Path(self.build_lib) / "sam3d_ros" / "core" / "recording" / "interfaces"
        sources = [("sam3d_ros", HERE / "msg")] + [
            (d.name, d / "msg") for d in sorted((HERE / "pip_only_interfaces").iterdir())
            if (d / "msg").is_dir()]
        for package, folder in sources:
            for msg in sorted(folder.glob("*.msg")):
                self.copy_file(str(msg), str(target / package / "msg" / msg.name))

    def copy_file(self, src, dst, *args, **kwargs):
        """Create the destination folder first (build_py copies into existing ones)."""
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        return super().copy_file(src, dst, *args, **kwargs)


setup(
    name="sam3d_ros",
    version=VERSION,
    description="Single-image 3D object reconstruction (SAM 3D Objects request/result), "
    "ROS-free core of the sam3d_ros ROS 2 package",
    long_description=(HERE / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["sam3d_ros", "sam3d_ros.*"], exclude=["sam3d_ros.ros"]),
    package_data={},
    include_package_data=False,
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "pillow>=10",
        "opencv-python-headless>=4.8",
        "rosbags>=0.11.9,<0.12",
    ],
    extras_require={
        "bench": ["pybullet>=3.2", "trimesh>=4"],
        "sam3": ["torch>=2.5", "transformers>=5"],
        "dev": [
            "pytest>=8",
            "ruff>=0.6",
            "pybullet>=3.2",
            "trimesh>=4",
            "plyfile>=1.0",
            "pygltflib>=1.16",
        ],
    },
    entry_points={"console_scripts": ["sam3d-reconstruct = sam3d_ros.core.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Operating System :: OS Independent",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
    zip_safe=False,
    cmdclass={"build_py": BuildWithInterfaces},
)
