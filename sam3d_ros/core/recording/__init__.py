"""Recordings without ROS: rosbag2 (sqlite3, MCAP) and bare MCAP in, an MCAP of the results out.

* :mod:`.typestore`: the rosbags type store with this project's and the pip-only interfaces'
  messages, and the rosbags message kit the shared output builders write with;
* :mod:`.reader`: the camera topics of a recording, paired as the node pairs them, frames selected;
  a truncated MCAP is read up to where it breaks;
* :mod:`.writer`: the output recording, written under a temporary name and renamed when closed;
* :mod:`.offline`: ``sam3d-reconstruct --bag``: every selected frame through the engine, the
  node's outputs written.
"""
