"""``python -m vkubelet`` is the ``virtual-kubelet`` command."""

from vkubelet.entrypoints.cli import main

raise SystemExit(main())
