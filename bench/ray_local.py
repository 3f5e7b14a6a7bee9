"""A real two-node Ray cluster on this machine, for tests and benchmarks: a head and one worker node, each with
``cpus`` CPUs, in their own temporary folder and process groups, so stopping it touches no other Ray."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRayCluster:
    """``with LocalRayCluster() as c: c.address`` — ``ray start --head`` plus ``ray start --address`` here;
    ``ray://127.0.0.1:{c.client_port}`` reaches it through Ray Client."""

    def __init__(self, nodes: int = 2, cpus: int = 1, object_store_mb: int = 100):
        self.nodes, self.cpus, self.object_store = nodes, cpus, object_store_mb * 1024 * 1024
        self.temp = Path(tempfile.mkdtemp(prefix="raytest", dir="/tmp"))
        self.port, self.client_port = free_port(), free_port()
        self.groups: list[int] = []   # process group of each node's `ray start` (its daemons inherit it)
        self.address = ""

    def _start(self, *args: str) -> None:
        # a Ray Client session starts its own server process; on a loaded machine that takes longer than 30 s
        env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0",
               "RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S": "180"}
        proc = subprocess.Popen([RAY, "start", *args, "--num-cpus", str(self.cpus), "--num-gpus", "0",
                                 "--temp-dir", str(self.temp), "--object-store-memory", str(self.object_store),
                                 "--node-ip-address", "127.0.0.1", "--disable-usage-stats"],
                                cwd=REPO, env=env, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        out, _ = proc.communicate(timeout=120)
        self.groups.append(proc.pid)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start {' '.join(args)} failed:\n{out[-2000:]}")

    def start(self) -> "LocalRayCluster":
        self._start("--head", "--port", str(self.port), "--include-dashboard=false",
                    "--ray-client-server-port", str(self.client_port))
        self.address = f"127.0.0.1:{self.port}"
        for _ in range(self.nodes - 1):
            self._start("--address", self.address)
        return self

    def processes(self) -> dict[int, str]:
        """``pid → command line`` of this cluster's processes: its nodes' process groups and their descendants
        (Ray starts workers in groups of their own)."""
        out = subprocess.run(["ps", "-eo", "pid=,ppid=,pgid=,args="], capture_output=True, text=True).stdout
        rows = [line.strip().split(None, 3) for line in out.splitlines() if line.strip()]
        rows = [(int(p), int(pp), int(g), a[0] if a else "") for p, pp, g, *a in rows]
        ours = {p for p, _pp, g, _a in rows if g in self.groups}
        grew = True
        while grew:
            new = {p for p, pp, _g, _a in rows if pp in ours and p not in ours}
            ours |= new
            grew = bool(new)
        return {p: a for p, _pp, _g, a in rows if p in ours}

    def worker_pids(self, name: str) -> list[int]:
        """Ray worker processes of this cluster running a task whose name starts with ``name``."""
        return [p for p, args in self.processes().items() if args.startswith(f"ray::{name}")]

    def stop(self) -> None:
        for group in self.groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.groups = []
        time.sleep(0.5)
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> "LocalRayCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

