"""The small wire habits AI Server clients depend on."""

from __future__ import annotations

import datetime

import pytest
from servicestack.utils import from_timespan

from imagetotext.api.wire import xsd_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "PT0S"), (2.5, "PT2.5S"), (59.999, "PT59.999S"), (90, "PT1M30S"), (3602, "PT1H0M2S"), (None, None)],
)
def test_durations_are_written_as_xsd_durations(seconds: float | None, text: str | None) -> None:
    assert xsd_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.25, 2.5, 75.125, 3725.5])
def test_servicestacks_client_reads_them_back(seconds: float) -> None:
    text = xsd_duration(seconds)
    assert from_timespan(text) == datetime.timedelta(seconds=seconds)
