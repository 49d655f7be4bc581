"""The /containerLogs query parameters, parsed as the kubelet does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from vkubelet.adapters.kubeletapi.logs import parse_log_options
from vkubelet.application.ports.streams import LogOptions
from vkubelet.domain.errors import InvalidInput


def test_defaults() -> None:
    assert parse_log_options({}) == LogOptions()


def test_every_parameter() -> None:
    options = parse_log_options(
        {
            "follow": "true",
            "tailLines": "0",
            "sinceTime": "2024-01-02T03:04:05Z",
            "timestamps": "1",
            "limitBytes": "10",
            "previous": "F",
        }
    )
    assert options == LogOptions(
        follow=True,
        tail_lines=0,
        since_time=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        timestamps=True,
        limit_bytes=10,
        previous=False,
    )
    offset = parse_log_options({"sinceTime": "2024-01-02T03:04:05.5+02:00"}).since_time
    assert offset == datetime(2024, 1, 2, 3, 4, 5, 500000, tzinfo=timezone(timedelta(hours=2)))
    assert parse_log_options({"sinceSeconds": "30"}).since_seconds == 30


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"follow": "yes"}, "follow"),
        ({"timestamps": "2"}, "timestamps"),
        ({"previous": "on"}, "previous"),
        ({"tailLines": "-1"}, "tailLines"),
        ({"tailLines": "ten"}, "tailLines"),
        ({"limitBytes": "0"}, "limitBytes"),
        ({"sinceSeconds": "0"}, "sinceSeconds"),
        ({"sinceSeconds": "1.5"}, "sinceSeconds"),
        ({"sinceTime": "2024-01-02"}, "sinceTime"),
        ({"sinceTime": "2024-01-02T03:04:05"}, "sinceTime"),  # no zone: not RFC 3339
        ({"sinceTime": "yesterday"}, "sinceTime"),
        ({"sinceSeconds": "5", "sinceTime": "2024-01-02T03:04:05Z"}, "sinceSeconds and sinceTime"),
    ],
)
def test_bad_values_name_the_parameter(query: dict[str, str], named: str) -> None:
    with pytest.raises(InvalidInput, match=named):
        parse_log_options(query)
