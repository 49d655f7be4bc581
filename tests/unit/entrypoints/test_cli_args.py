"""The command line: flags and environment variables to a validated command.

Every invalid input must raise CliError with exit code 2 and a message naming the flag (or the
environment variable) and the bad value. Upstream bugs fixed here are named in the tests.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from vkubelet.application.settings import Settings
from vkubelet.domain.provider import Taint
from vkubelet.domain.sampling import ALWAYS, SampleRate
from vkubelet.entrypoints.cli_args import (
    CliError,
    Command,
    HelpCommand,
    ProvidersCommand,
    RunCommand,
    VersionCommand,
    log_level_number,
    parse_command_line,
    parse_go_duration,
    wants_local_control_plane,
)

PROVIDERS = ("mock", "grpc")
EXPORTERS = ("jaeger", "zpages", "otlp")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    """A clean environment: no kubeconfig anywhere, not in a cluster."""
    return {"HOME": str(home)}


def parse(
    *argv: str,
    env: Mapping[str, str],
    providers: Sequence[str] = PROVIDERS,
    exporters: Sequence[str] = EXPORTERS,
) -> Command:
    return parse_command_line(list(argv), env, providers=providers, exporters=exporters)


def run(*argv: str, env: Mapping[str, str], **kwargs: Sequence[str]) -> RunCommand:
    command = parse(*argv, env=env, **kwargs)
    assert isinstance(command, RunCommand)
    return command


def settings(*argv: str, env: Mapping[str, str]) -> Settings:
    return run("--provider", "mock", *argv, env=env).settings


def error(*argv: str, env: Mapping[str, str], **kwargs: Sequence[str]) -> str:
    with pytest.raises(CliError) as raised:
        parse(*argv, env=env, **kwargs)
    assert raised.value.exit_code == 2
    return str(raised.value)


def bad(*argv: str, env: Mapping[str, str]) -> str:
    """The error for a run with --provider mock plus ``argv``."""
    return error("--provider", "mock", *argv, env=env)


# --- defaults ------------------------------------------------------------------------------


def test_defaults(env: dict[str, str]) -> None:
    s = settings(env=env)
    assert s.node.name == "virtual-kubelet"
    assert s.node.provider == "mock"
    assert s.node.operating_system == "linux"
    assert s.node.provider_config is None
    assert s.node.taint == Taint("virtual-kubelet.io/provider", "mock", "NoSchedule")
    assert s.node.cluster_domain == "cluster.local"
    assert s.node.lease_duration_seconds == 40
    assert s.node.lease_renew_interval == 10.0
    assert s.node.node_status_interval == 60.0
    assert s.node.ping_interval == 10.0
    assert s.node.ping_timeout == 5.0
    assert s.node.shutdown_node_not_ready is True
    assert s.controller.pod_sync_workers == 10
    assert s.controller.full_resync_period == 60.0
    assert s.controller.startup_timeout == 0.0
    assert (s.server.listen_host, s.server.listen_port) == ("0.0.0.0", 10250)
    assert (s.server.cert_path, s.server.key_path, s.server.ca_path) == (None, None, None)
    assert s.server.stream_idle_timeout == 4 * 3600
    assert s.server.stream_creation_timeout == 30
    assert s.server.anonymous_auth is False
    assert s.server.authentication_token_webhook is False
    assert s.server.authentication_token_webhook_cache_ttl == 120
    assert s.server.authorization_webhook_cache_authorized_ttl == 300
    assert s.server.authorization_webhook_cache_unauthorized_ttl == 30
    assert (s.kube.qps, s.kube.burst) == (50.0, 100)
    assert s.trace.exporters == ()
    assert s.trace.service_name == "virtual-kubelet"
    assert dict(s.trace.tags) == {}
    assert s.trace.sample_rate is None
    assert s.metrics_addr == ":10255"
    assert s.log_level == "info"


def test_no_kubeconfig_and_no_cluster_implies_the_local_control_plane(env: dict[str, str]) -> None:
    command = run("--provider", "mock", env=env)
    assert command.settings.kube.local_control_plane is True
    assert command.settings.kube.kubeconfig is None
    # Not loopback, which the API server's node proxy refuses: the host's address is detected
    # when the daemon starts (vkubelet.entrypoints.cli.node_ip).
    assert command.settings.node.internal_ip is None
    assert any("local control plane" in w for w in command.warnings)


def test_in_a_cluster_without_kubeconfig_uses_in_cluster_config(env: dict[str, str]) -> None:
    env |= {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    command = run("--provider", "mock", env=env)
    assert command.settings.kube.local_control_plane is False
    assert command.settings.kube.kubeconfig is None
    assert command.settings.node.internal_ip is None  # detected by the daemon
    assert command.warnings == ()


def test_parsing_prints_nothing(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    run("--provider", "mock", "--namespace", "x", "--klog.v", "2", env=env)
    with pytest.raises(CliError):
        parse("--bogus", env=env)
    assert capsys.readouterr() == ("", "")


def test_settings_are_frozen(env: dict[str, str]) -> None:
    s = settings("--trace-tag", "a=b", env=env)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.node.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.trace.tags["c"] = "d"  # type: ignore[index]


# --- kubeconfig and the local control plane -------------------------------------------------


def write(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("apiVersion: v1\nkind: Config\n")
    return path


def test_kubeconfig_flag(env: dict[str, str], tmp_path: Path) -> None:
    config = write(tmp_path / "kc.yaml")
    s = settings("--kubeconfig", str(config), env=env)
    assert s.kube.kubeconfig == config
    assert s.kube.local_control_plane is False
    assert s.node.internal_ip is None


def test_kubeconfig_flag_expands_home(env: dict[str, str], home: Path) -> None:
    config = write(home / "cfg" / "kc")
    assert settings("--kubeconfig", "~/cfg/kc", env=env).kube.kubeconfig == config


def test_kubeconfig_flag_naming_a_missing_file_is_an_error(env: dict[str, str], tmp_path: Path) -> None:
    # Upstream silently fell back to in-cluster config.
    missing = str(tmp_path / "nope")
    message = bad("--kubeconfig", missing, env=env)
    assert "--kubeconfig" in message and missing in message


def test_kubeconfig_from_env(env: dict[str, str], tmp_path: Path) -> None:
    config = write(tmp_path / "kc")
    env["KUBECONFIG"] = str(config)
    assert settings(env=env).kube.kubeconfig == config


def test_kubeconfig_env_list_takes_the_first_existing_entry(env: dict[str, str], tmp_path: Path) -> None:
    config = write(tmp_path / "second")
    env["KUBECONFIG"] = f"{tmp_path / 'first'}:{config}"
    assert settings(env=env).kube.kubeconfig == config


def test_kubeconfig_env_naming_a_missing_file_is_an_error(env: dict[str, str], tmp_path: Path) -> None:
    env["KUBECONFIG"] = str(tmp_path / "nope")
    message = bad(env=env)
    assert "KUBECONFIG" in message and str(tmp_path / "nope") in message


def test_kubeconfig_flag_wins_over_env(env: dict[str, str], tmp_path: Path) -> None:
    env["KUBECONFIG"] = str(write(tmp_path / "env"))
    flag = write(tmp_path / "flag")
    assert settings("--kubeconfig", str(flag), env=env).kube.kubeconfig == flag


def test_default_kubeconfig_in_home(env: dict[str, str], home: Path) -> None:
    config = write(home / ".kube" / "config")
    s = settings(env=env)
    assert s.kube.kubeconfig == config
    assert s.kube.local_control_plane is False


def test_empty_kubeconfig_flag_means_no_file(env: dict[str, str], home: Path) -> None:
    write(home / ".kube" / "config")
    env |= {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    s = settings("--kubeconfig=", env=env)
    assert s.kube.kubeconfig is None
    assert s.kube.local_control_plane is False


def test_local_control_plane_flag_ignores_a_discovered_kubeconfig(env: dict[str, str], home: Path) -> None:
    write(home / ".kube" / "config")
    command = run("--provider", "mock", "--local-control-plane", env=env)
    assert command.settings.kube.local_control_plane is True
    assert command.settings.kube.kubeconfig is None
    assert command.warnings == ()


def test_local_control_plane_flag_conflicts_with_an_explicit_kubeconfig(
    env: dict[str, str], tmp_path: Path
) -> None:
    config = write(tmp_path / "kc")
    message = bad("--local-control-plane", "--kubeconfig", str(config), env=env)
    assert "--local-control-plane" in message and str(config) in message


def test_local_control_plane_can_be_turned_off_explicitly_but_is_still_implied(env: dict[str, str]) -> None:
    assert settings("--local-control-plane=false", env=env).kube.local_control_plane is True


@pytest.mark.parametrize(
    ("requested", "kubeconfig", "in_cluster", "expected"),
    [
        (True, None, False, True),
        (True, Path("/kc"), True, True),
        (False, None, False, True),
        (False, None, True, False),
        (False, Path("/kc"), False, False),
        (False, Path("/kc"), True, False),
    ],
)
def test_wants_local_control_plane(
    requested: bool, kubeconfig: Path | None, in_cluster: bool, expected: bool
) -> None:
    assert (
        wants_local_control_plane(requested=requested, kubeconfig=kubeconfig, in_cluster=in_cluster)
        is expected
    )


# --- node -----------------------------------------------------------------------------------


def test_nodename_from_env(env: dict[str, str]) -> None:
    env["DEFAULT_NODE_NAME"] = "vk-env"
    assert settings(env=env).node.name == "vk-env"


def test_nodename_flag_wins_over_env(env: dict[str, str]) -> None:
    env["DEFAULT_NODE_NAME"] = "vk-env"
    assert settings("--nodename", "vk-0", env=env).node.name == "vk-0"


@pytest.mark.parametrize("name", ["VK-0", "vk_0", "-vk", "vk.", "a" * 254])
def test_invalid_nodename(env: dict[str, str], name: str) -> None:
    message = bad("--nodename", name, env=env)
    assert "--nodename" in message and repr(name) in message


def test_invalid_nodename_from_env_names_the_variable(env: dict[str, str]) -> None:
    env["DEFAULT_NODE_NAME"] = "Bad Name"
    message = bad(env=env)
    assert "DEFAULT_NODE_NAME" in message and "Bad Name" in message


def test_os_windows(env: dict[str, str]) -> None:
    assert settings("--os", "windows", env=env).node.operating_system == "windows"


@pytest.mark.parametrize("value", ["Linux", "WINDOWS", "darwin", ""])
def test_os_is_case_sensitive_and_limited(env: dict[str, str], value: str) -> None:
    message = bad("--os", value, env=env)
    assert "--os" in message and repr(value) in message


def test_provider_is_required_and_the_error_lists_the_available_ones(env: dict[str, str]) -> None:
    message = error(env=env)
    assert "--provider" in message and "mock, grpc" in message


def test_unknown_provider(env: dict[str, str]) -> None:
    message = error("--provider", "aws", env=env)
    assert "--provider" in message and "'aws'" in message and "mock, grpc" in message


def test_provider_config(env: dict[str, str], home: Path) -> None:
    assert settings("--provider-config", "/etc/vk/mock.json", env=env).node.provider_config == Path(
        "/etc/vk/mock.json"
    )
    assert settings("--provider-config", "~/mock.json", env=env).node.provider_config == home / "mock.json"


def test_cluster_domain(env: dict[str, str]) -> None:
    assert settings("--cluster-domain", "corp.example", env=env).node.cluster_domain == "corp.example"
    message = bad("--cluster-domain", "Bad_Domain", env=env)
    assert "--cluster-domain" in message and "Bad_Domain" in message


def test_pod_ip_from_env(env: dict[str, str]) -> None:
    env["VKUBELET_POD_IP"] = "10.1.2.3"
    assert settings(env=env).node.internal_ip == "10.1.2.3"
    env["VKUBELET_POD_IP"] = "fd00::1"
    assert settings(env=env).node.internal_ip == "fd00::1"


def test_invalid_pod_ip(env: dict[str, str]) -> None:
    env["VKUBELET_POD_IP"] = "10.1.2"
    message = bad(env=env)
    assert "VKUBELET_POD_IP" in message and "10.1.2" in message


def test_shutdown_node_not_ready(env: dict[str, str]) -> None:
    assert settings("--shutdown-node-not-ready", env=env).node.shutdown_node_not_ready is True
    assert settings("--shutdown-node-not-ready=false", env=env).node.shutdown_node_not_ready is False
    assert settings("--shutdown-node-not-ready=0", env=env).node.shutdown_node_not_ready is False
    message = bad("--shutdown-node-not-ready=maybe", env=env)
    assert "--shutdown-node-not-ready" in message and "maybe" in message


# --- taint ----------------------------------------------------------------------------------


def test_disable_taint(env: dict[str, str]) -> None:
    assert settings("--disable-taint", env=env).node.taint is None
    assert settings("--disable-taint=true", env=env).node.taint is None
    assert settings("--disable-taint=false", env=env).node.taint is not None


def test_deprecated_taint_flag_sets_the_key_and_warns_with_the_right_variable(env: dict[str, str]) -> None:
    command = run("--provider", "mock", "--taint", "example.com/vk", env=env)
    assert command.settings.node.taint == Taint("example.com/vk", "mock", "NoSchedule")
    # Upstream's message named VK_TAINT_KEY while its code read VKUBELET_TAINT_KEY (bug 3).
    assert [w for w in command.warnings if "--taint" in w] == [
        "--taint is deprecated: use VKUBELET_TAINT_KEY"
    ]


@pytest.mark.parametrize("variable", ["VKUBELET_TAINT_KEY", "VK_TAINT_KEY"])
def test_taint_key_from_env_overrides_the_flag(env: dict[str, str], variable: str) -> None:
    env[variable] = "from-env/key"
    assert settings("--taint", "from-flag", env=env).node.taint == Taint("from-env/key", "mock", "NoSchedule")


def test_vkubelet_taint_key_wins_over_vk_taint_key(env: dict[str, str]) -> None:
    env |= {"VKUBELET_TAINT_KEY": "canonical", "VK_TAINT_KEY": "alias"}
    command = run("--provider", "mock", env=env)
    assert command.settings.node.taint is not None
    assert command.settings.node.taint.key == "canonical"
    assert any("VK_TAINT_KEY" in w and "VKUBELET_TAINT_KEY" in w for w in command.warnings)


def test_empty_taint_variables_count_as_unset(env: dict[str, str]) -> None:
    env |= {"VKUBELET_TAINT_KEY": "", "VKUBELET_TAINT_VALUE": "", "VKUBELET_TAINT_EFFECT": ""}
    assert settings(env=env).node.taint == Taint("virtual-kubelet.io/provider", "mock", "NoSchedule")


def test_taint_value_defaults_to_the_provider_and_comes_from_env(env: dict[str, str]) -> None:
    assert run("--provider", "grpc", env=env).settings.node.taint == Taint(
        "virtual-kubelet.io/provider", "grpc", "NoSchedule"
    )
    env["VKUBELET_TAINT_VALUE"] = "special"
    assert settings(env=env).node.taint == Taint("virtual-kubelet.io/provider", "special", "NoSchedule")


@pytest.mark.parametrize("effect", ["NoSchedule", "PreferNoSchedule", "NoExecute"])
def test_taint_effect_from_env(env: dict[str, str], effect: str) -> None:
    env["VKUBELET_TAINT_EFFECT"] = effect
    taint = settings(env=env).node.taint
    assert taint is not None and taint.effect == effect


@pytest.mark.parametrize("effect", ["noschedule", "Never", "NoSchedule "])
def test_invalid_taint_effect(env: dict[str, str], effect: str) -> None:
    env["VKUBELET_TAINT_EFFECT"] = effect
    message = bad(env=env)
    assert "VKUBELET_TAINT_EFFECT" in message and repr(effect) in message


def test_invalid_taint_key_and_value(env: dict[str, str]) -> None:
    env["VKUBELET_TAINT_KEY"] = "bad key!"
    message = bad(env=env)
    assert "VKUBELET_TAINT_KEY" in message and "bad key!" in message
    assert "--taint" in bad("--taint", "/nokey", env={"HOME": env["HOME"]})
    env2 = {"HOME": env["HOME"], "VKUBELET_TAINT_VALUE": "-dash"}
    message = bad(env=env2)
    assert "VKUBELET_TAINT_VALUE" in message and "-dash" in message


# --- pod controller -------------------------------------------------------------------------


def test_pod_sync_workers(env: dict[str, str]) -> None:
    assert settings("--pod-sync-workers", "3", env=env).controller.pod_sync_workers == 3


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "", " 4"])
def test_invalid_pod_sync_workers(env: dict[str, str], value: str) -> None:
    # Upstream rejected 0 but panicked on negatives.
    message = bad(f"--pod-sync-workers={value}", env=env)
    assert "--pod-sync-workers" in message and repr(value) in message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("-0", 0.0),
        ("1m", 60.0),
        ("30s", 30.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("1.1s", 1.1),
        ("100ns", 1e-7),
        ("250us", 0.00025),
        ("250\u00b5s", 0.00025),
        ("250\u03bcs", 0.00025),
        ("1h1m1s1ms", 3661.001),
        ("2h45m0.5s", 9900.5),
        ("+5s", 5.0),
        ("-1.5s", -1.5),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", "5", "00", "1d", "1h 30m", " 1s", "abc", "1.2.3s", ".s", "s", "-", "+", "1S", "3000000h", "1e3s"],
)
def test_invalid_go_durations(text: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_go_duration(text)
    assert repr(text) in str(raised.value)


def test_duration_flags(env: dict[str, str]) -> None:
    s = settings(
        "--full-resync-period",
        "30s",
        "--startup-timeout=1m30s",
        "--stream-idle-timeout",
        "0",
        "--stream-creation-timeout=5s",
        env=env,
    )
    assert s.controller.full_resync_period == 30.0
    assert s.controller.startup_timeout == 90.0
    assert s.server.stream_idle_timeout == 0.0
    assert s.server.stream_creation_timeout == 5.0
    assert settings("--startup-timeout", "0", env=env).controller.startup_timeout == 0.0


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--full-resync-period", "0"),
        ("--full-resync-period", "-1s"),
        ("--full-resync-period", "1 minute"),
        ("--full-resync-period", "60"),
        ("--startup-timeout", "-10s"),
        ("--startup-timeout", "10"),
        ("--stream-idle-timeout", "4 hours"),
        ("--stream-idle-timeout", "-1h"),
        ("--stream-creation-timeout", "0"),
        ("--stream-creation-timeout", "xyz"),
        ("--authentication-token-webhook-cache-ttl", "2 min"),
        ("--authorization-webhook-cache-authorized-ttl", "-5m"),
        ("--authorization-webhook-cache-unauthorized-ttl", "1y"),
    ],
)
def test_invalid_duration_flags(env: dict[str, str], flag: str, value: str) -> None:
    message = bad(flag, value, env=env)  # also separated from the flag: a leading '-' is a value
    assert flag in message and repr(value) in message


# --- kubelet API server ---------------------------------------------------------------------


def test_listen_address(env: dict[str, str]) -> None:
    s = settings("--listen-address", "127.0.0.1:10251", env=env)
    assert (s.server.listen_host, s.server.listen_port) == ("127.0.0.1", 10251)
    s = settings("--listen-address", "[::1]:10250", env=env)
    assert (s.server.listen_host, s.server.listen_port) == ("::1", 10250)
    s = settings("--listen-address", ":9999", env=env)
    assert (s.server.listen_host, s.server.listen_port) == ("0.0.0.0", 9999)
    s = settings("--listen-address", "localhost:9999", env=env)
    assert (s.server.listen_host, s.server.listen_port) == ("localhost", 9999)


def test_listen_port_zero_lets_the_os_pick_on_an_ip_address(env: dict[str, str]) -> None:
    s = settings("--listen-address", "0.0.0.0:0", env=env)
    assert (s.server.listen_host, s.server.listen_port) == ("0.0.0.0", 0)
    s = settings("--listen-address", ":0", env=env)
    assert (s.server.listen_host, s.server.listen_port) == ("0.0.0.0", 0)
    s = settings("--listen-address", "[::1]:0", env=env)
    assert (s.server.listen_host, s.server.listen_port) == ("::1", 0)


def test_kubelet_port_env_overrides_the_default_port(env: dict[str, str]) -> None:
    env["KUBELET_PORT"] = "10260"
    s = settings(env=env)
    assert (s.server.listen_host, s.server.listen_port) == ("0.0.0.0", 10260)


def test_an_explicit_listen_address_wins_over_kubelet_port_with_a_warning(env: dict[str, str]) -> None:
    env["KUBELET_PORT"] = "10260"
    command = run("--provider", "mock", "--listen-address", "127.0.0.1:10251", env=env)
    assert command.settings.server.listen_port == 10251
    assert any("KUBELET_PORT" in w for w in command.warnings)


@pytest.mark.parametrize("value", ["abc", "0", "70000", "-1", "10 250", "2147483647"])
def test_invalid_kubelet_port(env: dict[str, str], value: str) -> None:
    # Upstream accepted anything up to 2**31-1.
    env["KUBELET_PORT"] = value
    message = bad(env=env)
    assert "KUBELET_PORT" in message and repr(value) in message


@pytest.mark.parametrize(
    "value",
    [
        "0.0.0.0",
        "localhost:0",
        "0.0.0.0:65536",
        "host:abc",
        "::1:10250",
        "[::1]10250",
        "[1.2.3.4]:1",
        "bad_host:1",
        "",
    ],
)
def test_invalid_listen_address(env: dict[str, str], value: str) -> None:
    message = bad(f"--listen-address={value}", env=env)
    assert "--listen-address" in message and repr(value) in message


def test_tls_files_from_env(env: dict[str, str]) -> None:
    env |= {
        "APISERVER_CERT_LOCATION": "/certs/tls.crt",
        "APISERVER_KEY_LOCATION": "/certs/tls.key",
        "APISERVER_CA_CERT_LOCATION": "/certs/ca.crt",
    }
    s = settings(env=env)
    assert s.server.cert_path == Path("/certs/tls.crt")
    assert s.server.key_path == Path("/certs/tls.key")
    assert s.server.ca_path == Path("/certs/ca.crt")


def test_tls_flags_win_over_env(env: dict[str, str]) -> None:
    env |= {
        "APISERVER_CERT_LOCATION": "/env/tls.crt",
        "APISERVER_KEY_LOCATION": "/env/tls.key",
        "APISERVER_CA_CERT_LOCATION": "/env/ca.crt",
    }
    s = settings(
        "--tls-cert-file", "/f/c", "--tls-private-key-file", "/f/k", "--client-ca-file", "/f/ca", env=env
    )
    assert (s.server.cert_path, s.server.key_path, s.server.ca_path) == (
        Path("/f/c"),
        Path("/f/k"),
        Path("/f/ca"),
    )


def test_a_certificate_without_its_key_is_an_error(env: dict[str, str]) -> None:
    env["APISERVER_CERT_LOCATION"] = "/certs/tls.crt"
    message = bad(env=env)
    assert "APISERVER_CERT_LOCATION" in message and "/certs/tls.crt" in message
    message = bad("--tls-private-key-file", "/k.pem", env={"HOME": env["HOME"]})
    assert "--tls-private-key-file" in message and "/k.pem" in message


def test_auth_flags(env: dict[str, str]) -> None:
    s = settings(
        "--anonymous-auth",
        "--authentication-token-webhook=true",
        "--authentication-token-webhook-cache-ttl=10s",
        "--authorization-webhook-cache-authorized-ttl",
        "1m",
        "--authorization-webhook-cache-unauthorized-ttl=0",
        env=env,
    )
    assert s.server.anonymous_auth is True
    assert s.server.authentication_token_webhook is True
    assert s.server.authentication_token_webhook_cache_ttl == 10
    assert s.server.authorization_webhook_cache_authorized_ttl == 60
    assert s.server.authorization_webhook_cache_unauthorized_ttl == 0
    assert settings("--anonymous-auth=F", env=env).server.anonymous_auth is False


@pytest.mark.parametrize("value", ["yes", "on", "2", ""])
def test_invalid_boolean_values(env: dict[str, str], value: str) -> None:
    message = bad(f"--anonymous-auth={value}", env=env)
    assert "--anonymous-auth" in message and repr(value) in message


def test_a_boolean_value_separated_by_a_space_is_rejected_with_a_hint(env: dict[str, str]) -> None:
    message = bad("--disable-taint", "false", env=env)
    assert "'false'" in message and "--flag=false" in message


# --- kube client ----------------------------------------------------------------------------


def test_kube_api_qps_and_burst(env: dict[str, str]) -> None:
    s = settings("--kube-api-qps", "12.5", "--kube-api-burst", "20", env=env)
    assert (s.kube.qps, s.kube.burst) == (12.5, 20)
    assert settings("--kube-api-qps=0", env=env).kube.qps == 0.0


@pytest.mark.parametrize("value", ["-1", "abc", "nan", "inf", "1e999", ""])
def test_invalid_kube_api_qps(env: dict[str, str], value: str) -> None:
    message = bad(f"--kube-api-qps={value}", env=env)
    assert "--kube-api-qps" in message and repr(value) in message


@pytest.mark.parametrize("value", ["0", "-5", "1.5", "many"])
def test_invalid_kube_api_burst(env: dict[str, str], value: str) -> None:
    message = bad("--kube-api-burst", value, env=env)
    assert "--kube-api-burst" in message and repr(value) in message


# --- tracing --------------------------------------------------------------------------------


def test_trace_exporters_repeatable_and_comma_separated(env: dict[str, str]) -> None:
    s = settings(
        "--trace-exporter", "jaeger,zpages", "--trace-exporter=otlp", "--trace-exporter", "jaeger", env=env
    )
    assert s.trace.exporters == ("jaeger", "zpages", "otlp")


def test_unknown_trace_exporter_lists_the_available_ones(env: dict[str, str]) -> None:
    message = bad("--trace-exporter", "jaeger,ocagent", env=env)
    assert "--trace-exporter" in message and "'ocagent'" in message and "jaeger, zpages, otlp" in message


def test_trace_exporters_come_from_the_caller(env: dict[str, str]) -> None:
    command = run("--provider", "mock", "--trace-exporter", "custom", env=env, exporters=("custom",))
    assert command.settings.trace.exporters == ("custom",)
    message = error("--provider", "mock", "--trace-exporter", "jaeger", env=env, exporters=("custom",))
    assert "available: custom" in message


def test_trace_service_name(env: dict[str, str]) -> None:
    assert settings("--trace-service-name", "vk-prod", env=env).trace.service_name == "vk-prod"
    message = bad("--trace-service-name=", env=env)
    assert "--trace-service-name" in message and "''" in message


def test_trace_tags(env: dict[str, str]) -> None:
    # Upstream panicked on any --trace-tag (nil map, its bug 1).
    s = settings(
        "--trace-exporter",
        "jaeger",
        "--trace-tag",
        "env=prod",
        "--trace-tag=url=a=b",
        "--trace-tag",
        "e=",
        env=env,
    )
    assert dict(s.trace.tags) == {"env": "prod", "url": "a=b", "e": ""}


def test_trace_tag_without_equals(env: dict[str, str]) -> None:
    message = bad("--trace-tag", "justakey", env=env)
    assert "--trace-tag" in message and "justakey" in message and "key=value" in message


def test_trace_tag_with_empty_key(env: dict[str, str]) -> None:
    message = bad("--trace-tag", "=v", env=env)
    assert "--trace-tag" in message and "'=v'" in message


def test_duplicate_trace_tag(env: dict[str, str]) -> None:
    message = bad("--trace-tag", "env=a", "--trace-tag", "env=b", env=env)
    assert "--trace-tag" in message and "env=b" in message and "duplicate" in message


@pytest.mark.parametrize("key", ["operatingSystem", "provider", "nodeName"])
def test_reserved_trace_tags(env: dict[str, str], key: str) -> None:
    message = bad("--trace-tag", f"{key}=x", env=env)
    assert "--trace-tag" in message and f"{key}=x" in message and "reserved" in message


def test_trace_sample_rate(env: dict[str, str]) -> None:
    assert (
        settings("--trace-exporter", "zpages", "--trace-sample-rate", "always", env=env).trace.sample_rate
        == ALWAYS
    )
    rate = settings("--trace-exporter", "zpages", "--trace-sample-rate=25", env=env).trace.sample_rate
    assert rate == SampleRate(0.25)


@pytest.mark.parametrize("value", ["150", "-1", "12.5", "abc", ""])
def test_invalid_trace_sample_rates(env: dict[str, str], value: str) -> None:
    # Upstream silently ignored out-of-range integers (its bug 2).
    message = bad(f"--trace-sample-rate={value}", env=env)
    assert "--trace-sample-rate" in message and repr(value) in message and "0..100" in message


def test_sampling_options_without_an_exporter_warn(env: dict[str, str]) -> None:
    env |= {"KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "443"}
    command = run("--provider", "mock", "--trace-sample-rate", "10", "--trace-tag", "a=b", env=env)
    assert command.warnings == (
        "--trace-sample-rate and --trace-tag have no effect without --trace-exporter",
    )


# --- logging, klog and deprecated flags -----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("panic", "panic"),
        ("fatal", "fatal"),
        ("error", "error"),
        ("warn", "warn"),
        ("warning", "warn"),
        ("info", "info"),
        ("DEBUG", "debug"),
        ("Trace", "trace"),
    ],
)
def test_log_levels(env: dict[str, str], value: str, stored: str) -> None:
    assert settings("--log-level", value, env=env).log_level == stored


def test_invalid_log_level(env: dict[str, str]) -> None:
    message = bad("--log-level", "verbose", env=env)
    assert "--log-level" in message and "'verbose'" in message


def test_log_level_numbers() -> None:
    assert log_level_number("info") == logging.INFO
    assert log_level_number("warn") == logging.WARNING
    assert log_level_number("trace") < logging.DEBUG
    assert log_level_number("fatal") == logging.CRITICAL


def test_klog_flags_are_tolerated_and_noted(env: dict[str, str]) -> None:
    # The upstream e2e deployment passes exactly these.
    command = run(
        "--klog.v",
        "2",
        "--klog.logtostderr",
        "--provider",
        "mock",
        "--klog.vmodule=x=4",
        "--klog.v=9",
        env=env,
    )
    assert command.settings.node.provider == "mock"
    assert len(command.notes) == 4
    assert all("klog" in note for note in command.notes)
    assert "--klog.v 2" in command.notes[0]


def test_a_boolean_klog_flag_does_not_swallow_the_next_word(env: dict[str, str]) -> None:
    command = parse("--klog.alsologtostderr", "version", env=env)
    assert isinstance(command, VersionCommand)


def test_deprecated_flags_warn(env: dict[str, str]) -> None:
    command = run("--provider", "mock", "--namespace", "default", "--enable-node-lease", env=env)
    assert any(w.startswith("--namespace is deprecated") for w in command.warnings)
    assert any(w.startswith("--enable-node-lease is deprecated") for w in command.warnings)
    command = run("--provider", "mock", "--enable-node-lease=false", env=env)
    assert any(w.startswith("--enable-node-lease is deprecated") for w in command.warnings)


def test_metrics_addr_is_accepted_but_unused(env: dict[str, str]) -> None:
    command = run("--provider", "mock", "--metrics-addr", ":9090", env=env)
    assert command.settings.metrics_addr == ":9090"
    assert any("--metrics-addr" in w and "unused" in w for w in command.warnings)


# --- usage errors, subcommands, help --------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--bogus"], "--bogus"),
        (["--prov", "mock"], "--prov"),  # no abbreviations, as pflag
        (["--provider"], "--provider"),
        (["-provider", "mock"], "-provider"),
    ],
)
def test_usage_errors_name_the_flag(env: dict[str, str], argv: list[str], named: str) -> None:
    assert named in error(*argv, env=env)


def test_version(env: dict[str, str]) -> None:
    assert isinstance(parse("version", env=env), VersionCommand)
    # Run flags are not validated for subcommands; --log-level (persistent upstream) is.
    assert isinstance(parse("version", "--os", "bsd", env=env), VersionCommand)
    assert "--log-level" in error("version", "--log-level", "loud", env=env)
    assert "version" in error("version", "extra", env=env)


def test_providers(env: dict[str, str]) -> None:
    command = parse("providers", env=env)
    assert command == ProvidersCommand(None, PROVIDERS)
    assert command.render() == (0, "mock\ngrpc\n")


def test_providers_with_a_known_name(env: dict[str, str]) -> None:
    command = parse("providers", "mock", env=env)
    assert isinstance(command, ProvidersCommand)
    assert command.render() == (0, "mock\n")


def test_providers_with_an_unknown_name_exits_1(env: dict[str, str]) -> None:
    command = parse("providers", "aws", env=env)
    assert isinstance(command, ProvidersCommand)
    code, text = command.render()
    assert code == 1
    assert "'aws'" in text and "mock, grpc" in text


def test_providers_takes_at_most_one_name(env: dict[str, str]) -> None:
    assert "providers" in error("providers", "a", "b", env=env)


def test_unknown_command(env: dict[str, str]) -> None:
    message = error("start", env=env)
    assert "'start'" in message


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["help"], ["--provider", "nope", "--help"]])
def test_help(env: dict[str, str], argv: list[str]) -> None:
    command = parse(*argv, env=env)
    assert isinstance(command, HelpCommand)
    for flag in (
        "--provider",
        "--trace-sample-rate",
        "--listen-address",
        "--disable-taint[=true|false]",
        "KUBELET_PORT",
    ):
        assert flag in command.text
    assert "--namespace" not in command.text  # deprecated flags are hidden, as upstream


def test_everything_after_double_dash_is_positional(env: dict[str, str]) -> None:
    assert "'--provider'" in error("--", "--provider", "mock", env=env)


# --- leader election (issue 14) ------------------------------------------------------------


def test_leader_election_is_off_by_default_with_the_documented_defaults(env: dict[str, str]) -> None:
    election = settings("--nodename", "vk-0", env=env).leader_election
    assert election.enabled is False
    assert (election.lease_duration, election.renew_deadline, election.retry_period) == (15.0, 10.0, 2.0)
    assert (election.namespace, election.name) == ("vkubelet-system", "vkubelet-vk-0")


def test_leader_election_flags(env: dict[str, str]) -> None:
    command = run(
        "--provider",
        "mock",
        "--leader-elect",
        "--leader-elect-lease-duration",
        "6s",
        "--leader-elect-renew-deadline=4s",
        "--leader-elect-retry-period",
        "500ms",
        "--leader-elect-resource-namespace",
        "ha",
        "--leader-elect-resource-name",
        "my-lock",
        env=env,
    )
    election = command.settings.leader_election
    assert election.enabled is True
    assert (election.lease_duration, election.renew_deadline, election.retry_period) == (6.0, 4.0, 0.5)
    assert (election.namespace, election.name) == ("ha", "my-lock")
    assert not any("leader" in warning for warning in command.warnings)


def test_leader_elect_takes_false(env: dict[str, str]) -> None:
    assert settings("--leader-elect=false", env=env).leader_election.enabled is False


def test_in_a_cluster_the_election_namespace_is_the_pods_own(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    namespace_file = tmp_path / "namespace"
    namespace_file.write_text("ha-system\n")
    monkeypatch.setattr("vkubelet.entrypoints.cli_args.SERVICE_ACCOUNT_NAMESPACE_FILE", namespace_file)
    in_cluster = {**env, "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert settings("--leader-elect", env=in_cluster).leader_election.namespace == "ha-system"
    # Out of the cluster the file is not read.
    assert settings("--leader-elect", env=env).leader_election.namespace == "vkubelet-system"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--leader-elect-renew-deadline", "15s"],
            "invalid value '15s' for --leader-elect-renew-deadline: must be shorter than "
            "--leader-elect-lease-duration (15s)",
        ),
        (
            ["--leader-elect-lease-duration", "8s"],
            "invalid value '10s' for --leader-elect-renew-deadline: must be shorter than "
            "--leader-elect-lease-duration (8s)",
        ),
        (
            ["--leader-elect-retry-period", "10s"],
            "invalid value '10s' for --leader-elect-retry-period: must be shorter than "
            "--leader-elect-renew-deadline (10s)",
        ),
        (["--leader-elect-retry-period", "0"], "invalid value '0' for --leader-elect-retry-period"),
        (["--leader-elect-lease-duration", "15"], "invalid value '15' for --leader-elect-lease-duration"),
        (
            [
                "--leader-elect-lease-duration",
                "900ms",
                "--leader-elect-renew-deadline",
                "800ms",
                "--leader-elect-retry-period",
                "100ms",
            ],
            "invalid value '900ms' for --leader-elect-lease-duration: the leader lease duration must "
            "be at least 1 s",
        ),
        (
            ["--leader-elect-resource-namespace", "Bad_NS"],
            "invalid value 'Bad_NS' for --leader-elect-resource-namespace",
        ),
        (
            ["--leader-elect-resource-name", "no/slash"],
            "invalid value 'no/slash' for --leader-elect-resource-name",
        ),
    ],
)
def test_bad_leader_election_values_are_named(env: dict[str, str], argv: list[str], expected: str) -> None:
    assert expected in bad("--leader-elect", *argv, env=env)


def test_leader_election_flags_without_leader_elect_warn(env: dict[str, str]) -> None:
    command = run("--provider", "mock", "--leader-elect-lease-duration", "20s", env=env)
    assert command.settings.leader_election.enabled is False
    assert "--leader-elect-lease-duration has no effect without --leader-elect" in command.warnings


# --- serving certificate from the CSR API (--rotate-server-certificates) -------------------------


def test_serving_certificate_rotation_is_off_by_default(env: dict[str, str]) -> None:
    s = settings(env=env)
    assert s.server.rotate_server_certificates is False
    assert s.server.serving_certificate_self_approve is False


@pytest.mark.parametrize(
    ("argv", "rotate", "self_approve"),
    [
        (["--rotate-server-certificates"], True, False),
        (["--rotate-server-certificates=true", "--serving-certificate-self-approve"], True, True),
        (["--rotate-server-certificates", "--serving-certificate-self-approve=false"], True, False),
        (["--rotate-server-certificates=false"], False, False),
    ],
)
def test_serving_certificate_flags(
    env: dict[str, str], argv: list[str], rotate: bool, self_approve: bool
) -> None:
    s = settings(*argv, env=env)
    assert (s.server.rotate_server_certificates, s.server.serving_certificate_self_approve) == (
        rotate,
        self_approve,
    )


def test_self_approval_needs_rotation(env: dict[str, str]) -> None:
    message = bad("--serving-certificate-self-approve", env=env)
    assert "--serving-certificate-self-approve needs --rotate-server-certificates" in message


@pytest.mark.parametrize("source", ["flag", "env"])
def test_rotation_and_a_certificate_file_are_mutually_exclusive(env: dict[str, str], source: str) -> None:
    if source == "flag":
        argv = ["--tls-cert-file", "/c.crt", "--tls-private-key-file", "/c.key"]
    else:
        env.update(APISERVER_CERT_LOCATION="/c.crt", APISERVER_KEY_LOCATION="/c.key")
        argv = []
    message = bad("--rotate-server-certificates", *argv, env=env)
    assert "--rotate-server-certificates and" in message and "mutually exclusive" in message


def test_a_bad_rotation_value_is_named(env: dict[str, str]) -> None:
    assert "--rotate-server-certificates" in bad("--rotate-server-certificates=maybe", env=env)
