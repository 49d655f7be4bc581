"""Kubernetes' rules for names, labels, taints and resource quantities, as the API server has them.

One place for what the command line and provider config files both check, so that a value one
accepts the other does not reject. Three shapes of function:

* ``is_*`` predicates;
* ``*_problem`` return why a value breaks the rule (a sentence without the value, for callers
  that name the value and where it came from, e.g. a flag) or None when it is fine;
  ``*_problems`` check several values and return one sentence per bad value, naming it;
* ``check_*`` raise :class:`~vkubelet.domain.errors.InvalidInput` naming the bad value.

Label values and taint values may be empty, as in Kubernetes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.provider import Taint
from vkubelet.domain.quantity import parse_quantity

#: The taint effects Kubernetes knows, in the order its documentation lists them.
TAINT_EFFECTS: tuple[str, ...] = ("NoSchedule", "PreferNoSchedule", "NoExecute")

MAX_DNS_LABEL = 63
MAX_DNS_SUBDOMAIN = 253
MAX_NAME_PART = 63  # the name of a qualified name ([prefix/]name), and a label value

# [a-z0-9], not \w or \d: those match non-ASCII letters and digits, which the API server rejects.
_DNS_LABEL_PATTERN = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS_LABEL = re.compile(_DNS_LABEL_PATTERN)
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL_PATTERN}(?:\.{_DNS_LABEL_PATTERN})*")
_NAME_PART = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?")

NODE_NAME_RULE = (
    "a node name must be a lowercase DNS subdomain (a-z, 0-9, '-' and '.', at most 253 characters)"
)
_QUALIFIED_NAME_RULE = (
    "must be a qualified name ([prefix/]name, name of at most 63 characters: letters, digits, '-', '_', '.')"
)
_NAME_PART_RULE = (
    "must be at most 63 characters: letters, digits, '-', '_', '.', starting and ending with a "
    "letter or digit"
)
TAINT_KEY_RULE = f"a taint key {_QUALIFIED_NAME_RULE}"
TAINT_VALUE_RULE = f"a taint value {_NAME_PART_RULE}"
TAINT_EFFECT_RULE = f"must be one of {', '.join(TAINT_EFFECTS)}"
LABEL_KEY_RULE = f"a label key {_QUALIFIED_NAME_RULE}"
LABEL_VALUE_RULE = f"a label value {_NAME_PART_RULE}"
QUANTITY_RULE = "must be a non-negative resource quantity such as 2, 500m or 32Gi"


# -- predicates -----------------------------------------------------------------------------------


def is_dns_label(name: str) -> bool:
    """A DNS-1123 label (namespaces, most object names' parts): ``[a-z0-9-]``, at most 63."""
    return len(name) <= MAX_DNS_LABEL and _DNS_LABEL.fullmatch(name) is not None


def is_dns_subdomain(name: str) -> bool:
    """A DNS-1123 subdomain (node names, Lease names): dot-separated labels, at most 253."""
    return len(name) <= MAX_DNS_SUBDOMAIN and _DNS_SUBDOMAIN.fullmatch(name) is not None


def is_qualified_name(key: str) -> bool:
    """A label or taint key: ``[prefix/]name``, the prefix a DNS subdomain, the name at most 63
    letters, digits, ``-``, ``_`` and ``.``, starting and ending with a letter or digit."""
    prefix, slash, name = key.rpartition("/")
    if slash and not (prefix and is_dns_subdomain(prefix)):
        return False
    return _is_name_part(name)


def is_label_value(value: str) -> bool:
    """A label (or taint) value: empty, or a name of at most 63 characters as in a key."""
    return value == "" or _is_name_part(value)


def is_taint_effect(effect: object) -> bool:
    return effect in TAINT_EFFECTS


def is_resource_quantity(text: str) -> bool:
    """A non-negative Kubernetes quantity (``2``, ``500m``, ``32Gi``, ``1e3``), by the grammar
    of :mod:`vkubelet.domain.quantity`."""
    if text.startswith("-"):
        return False
    try:
        parse_quantity(text)
    except InvalidInput:
        return False
    return True


def _is_name_part(name: str) -> bool:
    return len(name) <= MAX_NAME_PART and _NAME_PART.fullmatch(name) is not None


# -- problems: why a value breaks its rule, or None ---------------------------------------------


def node_name_problem(name: str) -> str | None:
    return None if is_dns_subdomain(name) else NODE_NAME_RULE


def taint_key_problem(key: str) -> str | None:
    return None if is_qualified_name(key) else TAINT_KEY_RULE


def taint_value_problem(value: str) -> str | None:
    return None if is_label_value(value) else TAINT_VALUE_RULE


def taint_effect_problem(effect: object) -> str | None:
    return None if is_taint_effect(effect) else TAINT_EFFECT_RULE


def label_key_problem(key: str) -> str | None:
    return None if is_qualified_name(key) else LABEL_KEY_RULE


def label_value_problem(value: str) -> str | None:
    return None if is_label_value(value) else LABEL_VALUE_RULE


def quantity_problem(text: str) -> str | None:
    return None if is_resource_quantity(text) else QUANTITY_RULE


def taint_problems(*, key: str, value: str, effect: object) -> tuple[str, ...]:
    """One sentence per bad part of a taint, naming it: ``key 'a b': a taint key must be ...``."""
    found = (
        ("key", key, taint_key_problem(key)),
        ("value", value, taint_value_problem(value)),
        ("effect", effect, taint_effect_problem(effect)),
    )
    return tuple(f"{part} {given!r}: {problem}" for part, given, problem in found if problem)


def label_problems(labels: Mapping[str, str]) -> tuple[str, ...]:
    """One sentence per bad key or value of ``labels``, naming it."""
    problems: list[str] = []
    for key, value in labels.items():
        key_problem = label_key_problem(key)
        if key_problem:
            problems.append(f"key {key!r}: {key_problem}")
        value_problem = label_value_problem(value)
        if value_problem:
            problems.append(f"value {value!r} of {key!r}: {value_problem}")
    return tuple(problems)


# -- checks: raise InvalidInput naming the value ------------------------------------------------


def check_node_name(name: str) -> str:
    """``name`` when it is a valid node name; otherwise InvalidInput naming it."""
    problem = node_name_problem(name)
    if problem:
        raise InvalidInput(f"invalid node name {name!r}: {problem}")
    return name


def check_taint(taint: Taint) -> Taint:
    """``taint`` when its key, value and effect are valid; otherwise InvalidInput naming them."""
    problems = taint_problems(key=taint.key, value=taint.value, effect=taint.effect)
    if problems:
        raise InvalidInput(f"invalid taint {str(taint)!r}: {'; '.join(problems)}")
    return taint


def check_labels(labels: Mapping[str, str]) -> Mapping[str, str]:
    """``labels`` when every key and value is valid; otherwise InvalidInput naming the bad ones."""
    problems = label_problems(labels)
    if problems:
        raise InvalidInput(f"invalid labels: {'; '.join(problems)}")
    return labels


def check_quantity(text: str) -> str:
    """``text`` when it is a non-negative resource quantity; otherwise InvalidInput naming it."""
    if not is_resource_quantity(text):
        raise InvalidInput(f"invalid resource quantity {text!r}: {QUANTITY_RULE}")
    return text
