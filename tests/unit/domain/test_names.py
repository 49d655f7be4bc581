import pytest

from vkubelet.domain.errors import InvalidInput
from vkubelet.domain.names import (
    NODE_NAME_RULE,
    QUANTITY_RULE,
    TAINT_EFFECTS,
    TAINT_KEY_RULE,
    TAINT_VALUE_RULE,
    check_labels,
    check_node_name,
    check_quantity,
    check_taint,
    is_dns_label,
    is_dns_subdomain,
    is_label_value,
    is_qualified_name,
    is_resource_quantity,
    is_taint_effect,
    label_problems,
    node_name_problem,
    quantity_problem,
    taint_effect_problem,
    taint_problems,
)
from vkubelet.domain.provider import Taint


@pytest.mark.parametrize("name", ["a", "vk-0", "0", "a" * 63, "a-b-c9"])
def test_dns_labels(name: str) -> None:
    assert is_dns_label(name)


@pytest.mark.parametrize("name", ["", "A", "-a", "a-", "a.b", "a_b", "a" * 64, "\u00e9", "\uff11"])
def test_not_dns_labels(name: str) -> None:
    assert not is_dns_label(name)


@pytest.mark.parametrize("name", ["vk-0", "node.example.com", "a" * 63 + "." + "b" * 63, "1.2.3.4"])
def test_dns_subdomains(name: str) -> None:
    assert is_dns_subdomain(name)
    assert node_name_problem(name) is None
    assert check_node_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "Node", "a..b", ".a", "a.", "a_b", "a b", "a" * 254, "-a.b", "a.-b", "vk-\u0661"]
)
def test_not_dns_subdomains(name: str) -> None:
    assert not is_dns_subdomain(name)
    assert node_name_problem(name) == NODE_NAME_RULE


def test_a_subdomain_may_be_253_characters_but_not_254() -> None:
    name = ".".join(["a" * 63] * 4)[:253]
    assert len(name) == 253 and is_dns_subdomain(name)
    assert not is_dns_subdomain(name + "a")


def test_check_node_name_names_the_value() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_node_name("Bad_Node")
    assert str(caught.value) == f"invalid node name 'Bad_Node': {NODE_NAME_RULE}"


@pytest.mark.parametrize(
    "key",
    ["dedicated", "example.com/gpu", "virtual-kubelet.io/provider", "A_b.C-9", "a" * 63, "a.b/" + "c" * 63],
)
def test_qualified_names(key: str) -> None:
    assert is_qualified_name(key)


@pytest.mark.parametrize(
    "key",
    ["", "/a", "a/", "a/b/c", "Example.com/a", "_a", "a_", "a b", "a" * 64, "a" * 254 + "/b", "\u00e9"],
)
def test_not_qualified_names(key: str) -> None:
    assert not is_qualified_name(key)


@pytest.mark.parametrize("value", ["", "gpu", "A.b_c-9", "a" * 63])
def test_label_values(value: str) -> None:
    assert is_label_value(value)


@pytest.mark.parametrize("value", ["-a", "a-", "a b", "a/b", "a" * 64, "\u00e9"])
def test_not_label_values(value: str) -> None:
    assert not is_label_value(value)


def test_taint_effects() -> None:
    assert TAINT_EFFECTS == ("NoSchedule", "PreferNoSchedule", "NoExecute")
    assert all(is_taint_effect(effect) for effect in TAINT_EFFECTS)
    for effect in ("noschedule", "", None, "NoSchedule "):
        assert not is_taint_effect(effect)
        assert taint_effect_problem(effect) == "must be one of NoSchedule, PreferNoSchedule, NoExecute"


def test_a_valid_taint_has_no_problems() -> None:
    taint = Taint("example.com/dedicated", "", "NoExecute")
    assert taint_problems(key=taint.key, value=taint.value, effect=taint.effect) == ()
    assert check_taint(taint) is taint


def test_taint_problems_name_every_bad_part() -> None:
    assert taint_problems(key="a b", value="-x", effect="Never") == (
        f"key 'a b': {TAINT_KEY_RULE}",
        f"value '-x': {TAINT_VALUE_RULE}",
        "effect 'Never': must be one of NoSchedule, PreferNoSchedule, NoExecute",
    )
    assert taint_problems(key="ok", value="ok", effect=None) == (
        "effect None: must be one of NoSchedule, PreferNoSchedule, NoExecute",
    )


def test_check_taint_names_the_taint_and_the_bad_value() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_taint(Taint("dedicated", "gpu", "Sometimes"))
    message = str(caught.value)
    assert message.startswith("invalid taint 'dedicated=gpu:Sometimes': effect 'Sometimes': must be one of")


def test_label_problems_name_the_bad_keys_and_values() -> None:
    labels = {"zone": "a", "bad key": "b", "tier": "-c"}
    assert label_problems({"topology.kubernetes.io/zone": "zone-a", "empty": ""}) == ()
    problems = label_problems(labels)
    assert len(problems) == 2
    assert problems[0].startswith("key 'bad key': a label key must be a qualified name")
    assert problems[1].startswith("value '-c' of 'tier': a label value must be at most 63 characters")
    with pytest.raises(InvalidInput, match="invalid labels: key 'bad key'"):
        check_labels(labels)
    assert check_labels({"zone": "a"}) == {"zone": "a"}


@pytest.mark.parametrize(
    "text", ["0", "2", "+2", "500m", "1.5", ".5", "1.", "32Gi", "1e3", "1E", "2k", "8Ei"]
)
def test_resource_quantities(text: str) -> None:
    assert is_resource_quantity(text)
    assert quantity_problem(text) is None
    assert check_quantity(text) == text


@pytest.mark.parametrize(
    "text", ["", "-1", "-0", "1 ", " 1", "1.5.5", "abc", "1Kb", "1i", "\u0661", "1e9999"]
)
def test_not_resource_quantities(text: str) -> None:
    assert not is_resource_quantity(text)
    assert quantity_problem(text) == QUANTITY_RULE
    with pytest.raises(InvalidInput) as caught:
        check_quantity(text)
    assert str(caught.value) == f"invalid resource quantity {text!r}: {QUANTITY_RULE}"
