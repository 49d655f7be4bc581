"""The built-in trace exporters are named once, in the settings; the CLI and the registry follow."""

from vkubelet.adapters.telemetry.exporters import DEFAULT_REGISTRY
from vkubelet.application.settings import TRACE_EXPORTERS
from vkubelet.entrypoints.cli_args import DEFAULT_EXPORTERS
from vkubelet.entrypoints.container import EXPORTER_NAMES


def test_the_registry_and_the_cli_offer_the_settings_list_in_its_order() -> None:
    assert TRACE_EXPORTERS == ("jaeger", "otlp", "zpages")
    assert DEFAULT_REGISTRY.names()[: len(TRACE_EXPORTERS)] == TRACE_EXPORTERS
    assert EXPORTER_NAMES == TRACE_EXPORTERS
    assert DEFAULT_EXPORTERS == TRACE_EXPORTERS
