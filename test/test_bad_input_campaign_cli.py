"""Bad-input campaign, CLI side (issue 10): the quick cases of benchmarks/bad_input_campaign.py.

Each case runs ``sam3d-reconstruct`` as a process on one bad input, then a good request, and
asserts the four properties: the error names the field (exit 2), the process ended by itself
(no crash, hang or memory blow-up), the next good run succeeds, nothing partial on disk. A case
that fails today because its fix has not landed is a strict xfail naming the issue item and the
branch: it turns into a failure when the fix lands (then drop the mark).
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from campaign.cli_cases import CliWorkspace, cli_cases  # noqa: E402
from campaign.outcome import select  # noqa: E402


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = CliWorkspace(tmp_path_factory.mktemp("campaign-cli"))
    yield ws
    ws.close()


def _param(case):
    marks = [pytest.mark.xfail(strict=True, reason=case.known)] if case.known else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in select(cli_cases(), quick=True)])
def test_cli_survives_bad_input(workspace, case):
    outcome = case.run(workspace)
    detail = f"{case.input}: {outcome.result} ({outcome.note})"
    assert outcome.named is not False, f"the error does not name {case.field!r}: {detail}"
    assert outcome.alive is not False, f"crashed, hung or blew up: {detail}"
    assert outcome.next_good is not False, f"the next good run failed: {detail}"
    assert outcome.disk_clean is not False, f"something partial left on disk: {detail}"
