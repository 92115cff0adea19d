"""One local Ray cluster for the whole test run, and the example trained and served once on it.

Everything goes through the real entry points: `ray start`, `rayline run`, `rayline serve`,
`ray job submit`, HTTP. Token authentication is turned off only inside these test processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from serve.run import isolated_serve_ports

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "examples" / "churn"
API_KEY = "test-key-5f2c9e"  # the PREDICT_API_KEY the served spec reads from the environment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode} before {url} came up")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not come up in {timeout:.0f} s")


@dataclass
class Cluster:
    address: str
    dashboard: str
    env: dict[str, str]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Cluster:
    port, dashboard_port = free_port(), free_port()
    # The cluster carries what a production one would: the secrets the spec reads (the Serve
    # app builds from the spec on the cluster) and the ingress mode rayline uses by default.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1",
           "PREDICT_API_KEY": API_KEY, "RAY_SERVE_ENABLE_HA_PROXY": "1",
           # HAProxy's ports and the ingress replicas' ports, clear of any other cluster here.
           **isolated_serve_ports()}
    env.pop("RAY_ADDRESS", None)
    log = open(tmp_path_factory.mktemp("ray") / "ray-start.log", "w")
    # 4 logical CPUs on a 2-core machine: Ray Train workers, Ray Data tasks and two Serve
    # replicas all need a slot at once; the work itself is small.
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=4",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
         # The job agent's fixed default port (52365) may be held by another cluster on the host.
         f"--dashboard-agent-listen-port={free_port()}",
         "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    try:
        wait_for(f"{dashboard}/api/version", 120, head)
        yield Cluster(address=address, dashboard=dashboard, env={**env, "RAY_ADDRESS": address})
    finally:
        # Serve first: HAProxy runs in a session of its own and would outlive a killed cluster.
        subprocess.run([str(BIN / "serve"), "shutdown", "-y", "--address", dashboard],
                       env=env, capture_output=True, timeout=120)
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(10)
        except subprocess.TimeoutExpired:
            pass
        try:  # whatever of the cluster is still up (raylet, GCS, workers) shares the group
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()


@dataclass
class Workspace:
    path: Path
    spec: Path
    env: dict[str, str]

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.path / '.rayline' / 'mlflow.db'}"

    def rayline(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "rayline"), *args], cwd=self.path, env=self.env,
                              capture_output=True, text=True, timeout=timeout)


def served_spec_text() -> str:
    """The example spec, serving with an API key read from the environment, small queues (so
    overload is reachable in a test) and an A/B section keyed by user_id."""
    text = (EXAMPLE / "spec.yaml").read_text()
    marker = "    port: 8000\n"
    assert marker in text
    text = text.replace(marker, marker + '    auth:\n      method: api_key\n'
                                         '      keys: ["${PREDICT_API_KEY}"]\n'
                                         '    max_ongoing_requests: 4\n    max_queued_requests: 8\n')
    return text + ("\nab_testing:\n  mode: split\n  traffic_split: {control: 50%, treatment: 50%}\n"
                   "  assignment_key: user_id\n")


@pytest.fixture(scope="session")
def workspace(tmp_path_factory, cluster) -> Workspace:
    path = tmp_path_factory.mktemp("churn")
    data = path / "examples" / "churn" / "data"
    data.mkdir(parents=True)
    shutil.copy(EXAMPLE / "data" / "customers.csv", data / "customers.csv")
    spec = path / "spec.yaml"
    spec.write_text(served_spec_text())
    return Workspace(path=path, spec=spec, env={**cluster.env, "PREDICT_API_KEY": API_KEY})


@pytest.fixture(scope="session")
def trained(workspace) -> subprocess.CompletedProcess:
    result = workspace.rayline("run", "spec.yaml")
    assert result.returncode == 0, f"rayline run failed:\n{result.stdout}\n{result.stderr}"
    return result


@dataclass
class Served:
    url: str
    headers: dict[str, str]


@pytest.fixture(scope="session")
def served(workspace, trained) -> Served:
    port = free_port()
    log_path = workspace.path / "serve.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([str(BIN / "rayline"), "serve", "spec.yaml", "--port", str(port)],
                            cwd=workspace.path, env=workspace.env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/ready", 240, proc)  # every variant loaded, not only the ingress up
        yield Served(url=url, headers={"X-API-Key": API_KEY})
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = None
        log.close()
        assert code == 0, f"rayline serve did not stop cleanly ({code}):\n{log_path.read_text()}"
