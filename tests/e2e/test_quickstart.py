"""The README is a test: `bash tools/run` exactly as written, then its quick-start block verbatim.

tools/run gets no argument, so it starts its own whole control plane and the daemon with the
process provider. HOME points at an empty directory (no ~/.kube/config can be picked up, and the
local cluster lives under it) while the binary cache stays the built one. At the end Ctrl-C (a
SIGINT to tools/run's process group, as a terminal sends it) must stop everything it started.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.vkubelet_process import REPO, leftovers, wait_for
from vkubelet.adapters.process.provider import ROOT_MARKER
from vkubelet.entrypoints.localcluster.binaries import CACHE_ENV, default_cache_root

QUICK_START = re.compile(r"<!-- quick-start:[^\n]*-->\n```bash\n(?P<script>.*?)\n```\n", re.DOTALL)
# What the README's first command runs: the sentence around it and the block must agree.
TWO_COMMANDS = re.compile(r"```bash\n(?P<run>bash tools/run)\s+#.*\n(?P<test>bash tools/test)\s+#")


def readme() -> str:
    return (REPO / "README.md").read_text()


def quick_start_script() -> str:
    match = QUICK_START.search(readme())
    assert match is not None, "README.md has no quick-start block (<!-- quick-start: ... --> + ```bash)"
    return match.group("script")


@pytest.fixture
def tools_run(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, dict[str, str]]]:
    if os.geteuid() != 0:
        pytest.skip("tools/run's kubelet API listens on port 10250, which needs root")
    home = tmp_path / "home"
    home.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("KUBECONFIG", "VKUBELET_LOCAL_CLUSTER_DIR")
    }
    env |= {"HOME": str(home), CACHE_ENV: str(default_cache_root())}
    log_path = tmp_path / "tools-run.log"
    with log_path.open("wb") as log:
        # Its own process group, as a shell job: Ctrl-C reaches the group.
        process = subprocess.Popen(
            ["bash", "tools/run"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, process_group=0
        )
    try:
        yield process, log_path, env
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        print(log_path.read_text(errors="replace")[-6000:])


def test_the_readme_names_the_two_commands() -> None:
    match = TWO_COMMANDS.search(readme())
    assert match is not None, "README.md's first code block must be `bash tools/run` then `bash tools/test`"
    ci = (REPO / ".ci" / "run").read_text()
    assert "exec bash tools/test" in ci  # CI runs the README's test command, nothing else


def test_tools_run_then_the_quick_start_as_written(
    tools_run: tuple[subprocess.Popen[bytes], Path, dict[str, str]],
) -> None:
    process, log_path, env = tools_run
    cluster_dir = Path(env["HOME"]) / ".cache" / "vkubelet" / "local-cluster"

    def ready() -> bool:
        assert process.poll() is None, f"tools/run exited with {process.returncode}"
        return "node vk-0 is ready" in log_path.read_text(errors="replace")

    wait_for(ready, timeout=180, what="tools/run to log `node vk-0 is ready`")

    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", quick_start_script()],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"the README's quick start failed:\n{output}"
    # What a newcomer sees: the node with a proxyable address, the pod scheduled and serving.
    node_line = next(line for line in result.stdout.splitlines() if line.startswith("vk-0 "))
    assert " Ready " in node_line
    internal_ip = node_line.split()[5]
    assert not internal_ip.startswith("127."), node_line
    assert re.search(r"^web-\S+\s+1/1\s+Running\s+0\s+\S+\s+\S+\s+vk-0\s", result.stdout, re.MULTILINE), (
        output
    )
    assert re.search(r"^hello from web-\S+$", result.stdout, re.MULTILINE), output
    assert "HTTP 200" in result.stdout
    assert re.search(r'"GET / HTTP/1.1" 200', result.stdout), output  # kubectl logs: the request
    assert re.search(r"^vk-0$", result.stdout, re.MULTILINE), output  # the stats summary via the node proxy
    assert 'deployment.apps "web" deleted' in result.stdout
    # The API server verified the kubelet API's certificate for those logs/exec/port-forward
    # calls: it runs with --kubelet-certificate-authority, and vk-0 serves a certificate from a
    # CSR that its signer issued.
    apiserver = [line for line in leftovers([str(cluster_dir)]) if "kube-apiserver" in line]
    assert apiserver and "--kubelet-certificate-authority=" in apiserver[0], apiserver
    csrs = subprocess.run(
        ["bash", "tools/kubectl", "get", "csr", "-o", "json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert csrs.returncode == 0, csrs.stderr
    issued = [
        item
        for item in json.loads(csrs.stdout)["items"]
        if item["spec"]["signerName"] == "kubernetes.io/kubelet-serving"
        and item["metadata"]["name"].startswith("csr-vk-0-")
        and item.get("status", {}).get("certificate")
        and any(c["type"] == "Approved" for c in item["status"].get("conditions", []))
    ]
    assert issued, csrs.stdout[-2000:]

    # Ctrl-C: everything tools/run started stops, and nothing is left behind.
    os.killpg(process.pid, signal.SIGINT)
    assert process.wait(timeout=60) == 0, log_path.read_text(errors="replace")[-3000:]
    pods_root = Path(tempfile.gettempdir()) / f"vkubelet-process-{os.getuid()}" / "vk-0"
    markers = [str(cluster_dir), f"{ROOT_MARKER}={pods_root}"]
    try:
        wait_for(lambda: not leftovers(markers), timeout=10, what="every process of tools/run to end")
    except AssertionError:
        raise AssertionError(f"left running after Ctrl-C: {leftovers(markers)}") from None
