"""Every domain capability has its protocol number, both ways; newer numbers are ignored."""

from __future__ import annotations

from vkubelet.adapters.grpc import convert
from vkubelet.adapters.grpc._generated import provider_pb2 as pb
from vkubelet.domain.provider import Capability


def test_every_capability_crosses_the_wire_and_back() -> None:
    numbers = convert.capabilities_to_proto(Capability)
    assert len(set(numbers)) == len(Capability)
    assert convert.capabilities_from_proto(numbers) == frozenset(Capability)


def test_revision_3_numbers_are_the_ones_in_the_proto() -> None:
    assert convert.capabilities_to_proto([Capability.KILL_CONTAINER]) == [10]
    assert convert.capabilities_to_proto([Capability.PROBES]) == [11]
    assert (pb.CAPABILITY_KILL_CONTAINER, pb.CAPABILITY_PROBES) == (10, 11)
    assert convert.capabilities_from_proto([10, 11]) == {Capability.KILL_CONTAINER, Capability.PROBES}


def test_unknown_and_unspecified_numbers_are_ignored() -> None:
    assert convert.capabilities_from_proto([pb.CAPABILITY_UNSPECIFIED, 12, 99, pb.CAPABILITY_LOGS]) == {
        Capability.LOGS
    }
