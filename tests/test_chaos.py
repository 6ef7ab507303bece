"""The fault-injection suite in its short form: 3 faults per scenario (`lovekey chaos` runs the
same code at length). Every count must be 0: nothing lost, nothing doubled, every provider
request on record."""

from __future__ import annotations

import pytest

from lovekey.bench.chaos import SCENARIOS, run_chaos, table
from tests.conftest import ADMIN_URL

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_faults_lose_and_double_nothing(scenario: str) -> None:
    rows = run_chaos(trials=3, admin_url=ADMIN_URL, scenarios=[scenario])
    print(table(rows))
    for row in rows:
        assert row.trials == 3
        assert row.checked > 0
        assert (row.lost, row.duplicated, row.unrecorded) == (0, 0, 0), "\n".join(
            [table(rows), *row.findings]
        )
