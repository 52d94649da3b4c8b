"""Shared test setup.

DDS isolation: every test run talks only to itself — discovery limited to this host and a
domain id derived from the process id unless the runner already chose one (tools/test.sh).
"""

import os

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
