"""Bad-input campaign, node side (issue 10): the quick cases of benchmarks/bad_input_campaign.py.

The installed node runs as its own process (test/node_harness.py); each case publishes one bad
frame or prompt, or sends one bad goal, and asserts the four properties: an error naming the field
in /diagnostics (or in the goal's result), the node alive (and within its memory bound), the next
good frame or goal processed, nothing partial in the node's output directory. Load cases (goal
storm, lifecycle cycles under 30 Hz input) assert that every request was answered. A case that
fails today because its fix has not landed is a strict xfail naming the issue item and the
branch: it turns into a failure when the fix lands (then drop the mark).
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from campaign.node_cases import node_cases  # noqa: E402
from campaign.node_session import node_campaign  # noqa: E402
from campaign.outcome import select  # noqa: E402


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    with node_campaign(tmp_path_factory.mktemp("campaign-node")) as camp:
        yield camp


def _param(case):
    marks = [pytest.mark.xfail(strict=True, reason=case.known)] if case.known else []
    return pytest.param(case, id=case.name, marks=marks)


# In table order: cases of one node session are adjacent, so each session starts once.
@pytest.mark.parametrize("case", [_param(c) for c in select(node_cases(soak_s=0), quick=True)])
def test_node_survives_bad_input(campaign, case):
    outcome = case.run(campaign)
    detail = f"{case.input}: {outcome.result} ({outcome.note})"
    assert outcome.named is not False, f"no error naming {case.field!r}: {detail}"
    assert outcome.alive is not False, f"node died, blew up or left requests unanswered: {detail}"
    assert outcome.next_good is not False, f"the next good input was not processed: {detail}"
    assert outcome.disk_clean is not False, f"something partial left on disk: {detail}"
