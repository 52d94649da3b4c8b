"""The installed node with the contract fakes (``contract_fakes.py``) as its backends.

``python test/fake_node.py --ros-args ...``: the node process of the failure-path tests; the
fakes replace the registry's ``embedded`` backends, everything else is the installed node.
"""

import sys

import contract_fakes

from sam3d_ros.ros.node import main

if __name__ == "__main__":
    contract_fakes.install()
    sys.exit(main())
