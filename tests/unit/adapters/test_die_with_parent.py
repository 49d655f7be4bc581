"""Children die with the process that started them, but never with a passing thread."""

from __future__ import annotations

import shutil
import threading

import pytest

from vkubelet.adapters.system import die_with_parent_prefix


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux's setpriv")
def test_the_main_thread_gets_the_pdeathsig_prefix() -> None:
    prefix = die_with_parent_prefix()
    assert prefix[1:] == ["--pdeathsig", "KILL", "--"]


def test_another_thread_gets_none() -> None:
    # PR_SET_PDEATHSIG fires when the starting *thread* exits: a child of a worker thread
    # (asyncio.to_thread) would be killed as soon as the worker is retired.
    seen: list[list[str]] = []
    worker = threading.Thread(target=lambda: seen.append(die_with_parent_prefix()))
    worker.start()
    worker.join()
    assert seen == [[]]
