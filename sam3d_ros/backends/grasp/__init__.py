"""Grasp planners behind the GraspPlanner protocol."""
