"""The thin ROS 2 shell: message conversions, the lifecycle node, its scheduling and outputs.

Everything here needs rclpy; the logic it calls lives in :mod:`sam3d_ros.core`.
"""
