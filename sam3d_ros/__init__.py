"""sam3d_ros: single-image 3D object reconstruction for grasp planning, as a ROS 2 package.

The ROS-free core (request → segment → reconstruct → export) lives in plain modules of this
package; the generated interfaces (``sam3d_ros.msg``, ``sam3d_ros.action``) sit beside them
when the package is built with ament/colcon.
"""

__version__ = "0.1.0"
