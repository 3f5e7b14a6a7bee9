"""Jobs on a Ray cluster: which cluster a job uses, and the distributor that runs its chunks there.

A job runs on a cluster when one is named, first found of: the command line's ``--cluster``, the environment
variable ``RELEVANCE_ATLAS_CLUSTER``, ``"cluster"`` in ``workspace.json``. The value is ``auto`` (the cluster
this machine is a node of), ``HOST:PORT`` (the head's GCS port; this machine is a node) or
``ray://HOST:PORT`` (Ray Client, from a machine outside the cluster); ``local`` or nothing: run here. Ray is
imported only when a job actually sends work to a cluster, so a laptop needs no Ray process at all.

The job's own process stays the driver (on the machine that started it, so cancel and liveness are those of a
local job): its request runs as usual, and per-scan work (:func:`lib.core.distribute.current`) is sent to the
cluster in chunks, each a Ray task with retries (a killed worker's chunk runs again), one CPU, and one GPU when
the cluster has GPUs. Workers must see the workspace at the same path (a shared filesystem) and this
repository's code at the same path.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import Any, Callable, Iterator, Sequence

from lib.core.distribute import Call, ClusterError, using
from lib.data.workspace import REPO_ROOT, Workspace

ENV = "RELEVANCE_ATLAS_CLUSTER"
LOCAL = ("", "local", "none", "off")

__all__ = ["ENV", "ClusterError", "RayDistributor", "cluster_address", "session"]


def cluster_address(ws: Workspace | None = None, given: str | None = None) -> str | None:
    """The cluster jobs of ``ws`` run on (None: here); ``given`` is the command line's ``--cluster``."""
    for value in (given, os.environ.get(ENV), (ws.config.get("cluster") if ws is not None else None)):
        if value is None:
            continue
        value = str(value).strip()
        if value.lower() in LOCAL:
            return None
        check_address(value)
        return value
    return None


def check_address(address: str) -> None:
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"cluster {address!r}: expected auto, HOST:PORT or ray://HOST:PORT "
                           f"(from --cluster, ${ENV} or workspace.json)")


class RayDistributor:
    """Chunks of a job as Ray tasks on the cluster at ``address`` (connected at the first chunk)."""

    name = "ray"

    def __init__(self, address: str, *, max_retries: int = 3, head_grace: float = 6.0):
        check_address(address)
        self.address, self.max_retries, self.head_grace = address, max_retries, head_grace
        self._ray = None
        self._remote: dict = {}
        self._resources: tuple[float, dict] = (0.0, {})
        self._head: tuple[str, int] | None = None

    # --- connection -------------------------------------------------------------------------------------------
    def connect(self):
        if self._ray is not None:
            return self._ray
        try:
            import ray
        except ImportError as exc:
            raise ClusterError("this job asks for a Ray cluster but Ray is not installed here "
                               "(pip install 'ray[default]')") from exc
        try:
            # workers import this repository's code from the same path (shared filesystem)
            ray.init(address=self.address, namespace="relevance-atlas", ignore_reinit_error=True,
                     runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
        except Exception as exc:  # noqa: BLE001 - Ray raises several kinds for an unreachable cluster
            raise ClusterError(f"cannot reach the Ray cluster at {self.address}: {type(exc).__name__}: {exc}") \
                from exc
        self._ray = ray
        self._head = _head_endpoint(ray, self.address)
        return ray

    def close(self) -> None:
        if self._ray is not None:
            with contextlib.suppress(Exception):
                self._ray.shutdown()
            self._ray = None

    def resources(self) -> dict:
        """The cluster's resources (CPU, GPU), re-read at most every 5 s."""
        ray = self.connect()
        stamp, cached = self._resources
        if time.monotonic() - stamp > 5:
            try:
                cached = dict(ray.cluster_resources())
            except Exception as exc:  # noqa: BLE001
                raise self._lost(exc) from exc
            self._resources = (time.monotonic(), cached)
        return cached

    def workers(self, gpu: bool = False) -> int:
        res = self.resources()
        if gpu and res.get("GPU", 0) >= 1:
            return int(res["GPU"])
        return max(1, int(res.get("CPU", 1)))

    # --- running chunks ---------------------------------------------------------------------------------------
    def _task(self, call: Call, gpu: bool):
        ray = self.connect()
        fn = self._remote.get(call.fn)
        if fn is None:
            fn = self._remote[call.fn] = ray.remote(call.fn)
        options = {"num_cpus": 1, "max_retries": self.max_retries, "name": call.label or call.fn.__name__}
        if call.gpu and gpu:
            options["num_gpus"] = 1
        return fn.options(**options).remote(*call.args, **call.kwargs)

    def run(self, calls: Sequence[Call], on_wait: Callable[[int], None] | None = None
            ) -> Iterator[tuple[int, Any]]:
        ray = self.connect()
        gpu = self.resources().get("GPU", 0) >= 1
        try:
            pending = {self._task(c, gpu): i for i, c in enumerate(calls)}
        except Exception as exc:  # noqa: BLE001
            raise self._lost(exc) from exc
        last_check = time.monotonic()
        try:
            while pending:
                try:
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                except Exception as exc:  # noqa: BLE001
                    raise self._lost(exc) from exc
                if not ready:
                    if time.monotonic() - last_check > 2:
                        last_check = time.monotonic()
                        self._check_head()
                    if on_wait:
                        on_wait(len(pending))
                    continue
                for ref in ready:
                    i = pending.pop(ref)
                    yield i, self._result(ray, ref, calls[i])
        finally:
            for ref in pending:   # cancelled, failed or closed early: stop what is still queued or running
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)

    def _result(self, ray, ref, call: Call):
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:   # the chunk's own error, as it was raised on the worker
            raise exc.as_instanceof_cause() from None
        except ray.exceptions.OutOfMemoryError as exc:
            raise ClusterError(f"{call.label or call.fn.__name__}: its worker ran out of memory; give the workers "
                               "more memory or use a smaller batch size. Finished chunks are kept") from exc
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
            raise ClusterError(f"{call.label or call.fn.__name__}: its worker died {self.max_retries + 1} times "
                               f"({type(exc).__name__}); finished chunks are kept, submit the job again") from exc
        except Exception as exc:  # noqa: BLE001 - the cluster itself failed
            raise self._lost(exc) from exc

    # --- the head going away ----------------------------------------------------------------------------------
    def _check_head(self) -> None:
        """Raise :class:`ClusterError` when the head has not answered for ``head_grace`` seconds."""
        if self._head is None:
            return
        deadline = time.monotonic() + self.head_grace
        while True:
            try:
                socket.create_connection(self._head, timeout=1.0).close()
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise self._lost(exc) from exc
                time.sleep(0.5)

    def _lost(self, exc: BaseException) -> ClusterError:
        return ClusterError(f"the Ray cluster at {self.address} went away ({type(exc).__name__}: {exc}). "
                            "Chunks that finished are kept: submit the job again (start the cluster first) and "
                            "only the missing ones are computed")


def _head_endpoint(ray, address: str) -> tuple[str, int] | None:
    """``(host, port)`` whose answer says the head is up: the Ray Client server, or the GCS."""
    if address.startswith("ray://"):
        host, _, port = address.removeprefix("ray://").rpartition(":")
        return host, int(port)
    try:
        host, _, port = ray.get_runtime_context().gcs_address.rpartition(":")
        return host, int(port)
    except Exception:  # noqa: BLE001 - an older Ray without it: rely on Ray's own errors
        return None


@contextlib.contextmanager
def session(address: str | None) -> Iterator[RayDistributor | None]:
    """Per-scan work inside runs on the cluster at ``address`` (None: here, nothing imported)."""
    if not address:
        yield None
        return
    distributor = RayDistributor(address)
    try:
        with using(distributor):
            yield distributor
    finally:
        distributor.close()
