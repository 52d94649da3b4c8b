"""Embedded CPU backends (numpy, scipy, OpenCV; no weights): segmentation and reconstruction."""
