"""pip-installable ROS-free core of sam3d_ros (reconstruction without ROS).

The ROS 2 package is built with colcon / ament_cmake from ``CMakeLists.txt`` and ``package.xml``;
this file is only for people who want ``sam3d-reconstruct`` and the Python API without ROS::

    pip install .                 # core: numpy, scipy, pillow, OpenCV (headless)
    pip install .[synthetic]      # pybullet scenes for tests and benchmarks
    pip install .[dev]            # tests and lint

The ROS node modules (``sam3d_ros.node``, ``sam3d_ros.conversions``) are installed too but are
only importable where rclpy is. SAM 3D Objects is not on PyPI and is installed by the user (its
own license); the ``sam3`` extra installs what the SAM 3 segmentation adapter imports.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "sam3d_ros" / "__init__.py").read_text(), re.M
).group(1)

setup(
    name="sam3d_ros",
    version=VERSION,
    description="Single-image 3D object reconstruction (SAM 3D Objects request/result), "
    "ROS-free core of the sam3d_ros ROS 2 package",
    long_description=(HERE / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["sam3d_ros", "sam3d_ros.*"]),
    package_data={},
    include_package_data=False,
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "pillow>=10",
        "opencv-python-headless>=4.8",
    ],
    extras_require={
        "synthetic": ["pybullet>=3.2", "trimesh>=4"],
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
    entry_points={"console_scripts": ["sam3d-reconstruct = sam3d_ros.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Operating System :: OS Independent",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
    zip_safe=False,
)
