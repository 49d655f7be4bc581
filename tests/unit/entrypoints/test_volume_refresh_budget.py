"""The volume checks of running pods get a fifth of the client's request rate."""

from __future__ import annotations

from vkubelet.entrypoints.container import volume_refresh_batch


def test_an_unlimited_client_still_checks_a_bounded_batch() -> None:
    assert volume_refresh_batch(0, 2.0) == 100


def test_the_default_limit_checks_ten_pods_a_period() -> None:
    # 0.2 * 50 qps * 2 s / 3 reads a pod = 6, raised to the floor of 10
    assert volume_refresh_batch(50, 2.0) == 10


def test_a_raised_limit_checks_more() -> None:
    assert volume_refresh_batch(500, 2.0) == 66
