"""The ROS-free core: request → segment → reconstruct → grasp → export.

Conventions, depth hygiene, tracking and run directories that every backend and shell shares.
Nothing here imports ROS.
"""
