"""vkubelet: a virtual kubelet in Python.

The package is layered (enforced by import-linter, see pyproject.toml):
``entrypoints`` > ``adapters`` > ``application`` > ``domain``.
"""

__version__ = "0.1.0"
