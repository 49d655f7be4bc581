"""The daemon's garbage-collector settings (entrypoints/cli.py: tune_garbage_collector)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from vkubelet.entrypoints.cli import GC_YOUNG_THRESHOLD, tune_garbage_collector


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_the_daemon_collects_young_objects_less_often_and_freezes_what_import_made() -> None:
    _, middle, old = gc.get_threshold()
    tune_garbage_collector()
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, middle, old)
    assert GC_YOUNG_THRESHOLD > 700  # CPython's default
    assert gc.get_freeze_count() > 0
    gc.collect()
    assert gc.get_freeze_count() > 0, "a full collection leaves the frozen objects alone"
