"""The bad-input and load campaign of issue 10 (run by ``benchmarks/bad_input_campaign.py``).

:mod:`campaign.outcome` holds the case / outcome records and the table, :mod:`campaign.cli_cases`
the ``sam3d-reconstruct`` cases, :mod:`campaign.node_cases` the node cases (over DDS, through
``test/node_harness.py``). ``test/test_bad_input_campaign_*.py`` run a quick subset as
regression tests.
"""
