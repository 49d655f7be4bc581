"""Top functions of a py-spy ``--format raw`` profile (collapsed stacks: ``a;b;c <count>``).

    .venv/bin/python bench/folded.py /tmp/bench/bench-vk-raised-n5000-r1.folded --top 30

Prints, per function (``name (file:line)`` as py-spy writes it, the line number dropped so one
function is one row), the share of samples in which it is on the stack (inclusive) and at the
top of the stack (self). Idle samples (the event loop waiting in ``select``/``epoll``) are
counted apart. py-spy already drops samples of idle threads; what remains of the loop
waiting in epoll is shown as idle.
"""

from __future__ import annotations

import argparse
import collections
import re
from collections.abc import Sequence
from pathlib import Path

_LINE = re.compile(r":\d+\)$")
IDLE_FRAME = "EpollSelector.select (selectors.py)"


def frame_key(frame: str) -> str:
    return _LINE.sub(")", frame.strip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default="", help="only functions whose frame contains this text")
    args = parser.parse_args(argv)
    inclusive: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [frame_key(f) for f in stack.split(";") if f]
        total += count
        if frames and frames[-1] == IDLE_FRAME:
            idle += count
            continue
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    busy = max(1, total - idle)
    print(f"{total} samples, {idle} idle (event loop waiting), {busy} busy; shares are of busy samples\n")
    print("inclusive %  self %  function")
    shown = 0
    for frame, count in inclusive.most_common():
        if shown >= args.top:
            break
        if args.match and args.match not in frame:
            continue
        shown += 1
        print(f"{100 * count / busy:10.1f}  {100 * self_time[frame] / busy:6.1f}  {frame}")
    print("\nself %  function")
    for frame, count in self_time.most_common(args.top):
        print(f"{100 * count / busy:6.1f}  {frame}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
