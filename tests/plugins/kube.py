"""Fixtures for the Kubernetes API: the kmock emulator on a loopback port (in a background
thread, it runs on asyncio), a kubeconfig pointing at it, and a stand-in for the Machine Config
Operator that moves pools through Updating to Updated or Degraded over real HTTP.

The emulator's known gaps are handled here, never in product code: creates answer 200 (the
client then returns None) -> answer 201; list responses lack kind/apiVersion -> added.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml
from kubernetes import client, config

GROUP = "machineconfiguration.openshift.io"
VERSION = "v1"
POOLS = f"{GROUP}/{VERSION}/machineconfigpools"
MACHINECONFIGS = f"{GROUP}/{VERSION}/machineconfigs"
CONFIGMAPS = "v1/configmaps"
KINDS = {"machineconfigpools": "MachineConfigPool", "machineconfigs": "MachineConfig"}


class Emulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    async def _serve_create(self, request: kmock.Request) -> Any:
        return kmock.Response(status=201, payload=await super()._serve_create(request))

    async def _serve_list(self, request: kmock.Request) -> Any:
        listed = await super()._serve_list(request)
        resource = request.resource
        if resource is not None:
            group_version = f"{resource.group}/{resource.version}".lstrip("/")
            kind = KINDS.get(resource.plural or "", "ConfigMap")
            listed = {"apiVersion": group_version, "kind": f"{kind}List", **listed}
        return listed


@dataclass
class KubeServer:
    """kmock on 127.0.0.1 in a thread; `kubeconfig` has one context per simulated cluster."""

    directory: Path
    emulator: Emulator = field(default_factory=Emulator)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _stop: asyncio.Event | None = None

    def start(self) -> KubeServer:
        self.emulator.resources[POOLS] = {
            "kind": "MachineConfigPool",
            "namespaced": False,
            "verbs": {"get", "list", "watch", "create", "patch", "delete"},
            "subresources": {"status"},
        }
        self.emulator.resources[MACHINECONFIGS] = {
            "kind": "MachineConfig",
            "namespaced": False,
            "verbs": {"get", "list", "watch", "create", "patch", "delete"},
        }
        self.emulator.resources[CONFIGMAPS] = {
            "kind": "ConfigMap",
            "namespaced": True,
            "verbs": {"get", "list", "watch", "create", "patch", "delete"},
        }
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            self._stop = asyncio.Event()
            async with self.emulator, kmock.Server(self.emulator) as server:
                self.port = server.port
                ready.set()
                await self._stop.wait()

        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(serve(),), daemon=True
        )
        self._thread.start()
        if not ready.wait(15):
            raise TimeoutError("kmock did not start within 15s")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, contexts: list[str]) -> Path:
        path = self.directory / "kubeconfig"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
                    "users": [{"name": "tester", "user": {"token": "not-a-secret"}}],
                    "contexts": [
                        {"name": name, "context": {"cluster": "kmock", "user": "tester"}}
                        for name in contexts
                    ],
                    "current-context": contexts[0],
                }
            )
        )
        return path


class MachineConfigOperator:
    """Plays the MCO for one pool over the API (so watches see every step)."""

    def __init__(self, kubeconfig: Path, context: str) -> None:
        self.api_client = config.new_client_from_config(
            config_file=str(kubeconfig), context=context
        )
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.generation = 0

    def close(self) -> None:
        self.api_client.close()

    def seed_base(self, base_image: str, release: str = "4.16.3") -> None:
        self.core.create_namespaced_config_map(
            "openshift-machine-config-operator",
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "machine-config-osimageurl",
                    "namespace": "openshift-machine-config-operator",
                },
                "data": {"baseOSContainerImage": base_image, "releaseVersion": release},
            },
        )

    def create_pool(self, pool: str, *, machines: int, os_image_url: str) -> None:
        rendered = self._render(pool, os_image_url)
        self.custom.create_cluster_custom_object(
            GROUP,
            VERSION,
            "machineconfigpools",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "MachineConfigPool",
                "metadata": {"name": pool},
                "spec": {"configuration": {"name": rendered}},
                "status": self._status(rendered, rendered, machines, machines),
            },
        )

    def _render(self, pool: str, os_image_url: str) -> str:
        self.generation += 1
        # unique across instances: several may play the MCO of one emulator in turn
        name = f"rendered-{pool}-{self.generation:04d}-{uuid.uuid4().hex[:6]}"
        self.custom.create_cluster_custom_object(
            GROUP,
            VERSION,
            "machineconfigs",
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "MachineConfig",
                "metadata": {"name": name},
                "spec": {"osImageURL": os_image_url},
            },
        )
        return name

    @staticmethod
    def _status(
        target: str,
        current: str,
        machines: int,
        updated: int,
        degraded: str = "",
    ) -> dict[str, Any]:
        done = current == target and updated == machines and not degraded
        conditions = [
            {"type": "Updated", "status": str(done)},
            {"type": "Updating", "status": str(not done and not degraded)},
            {"type": "NodeDegraded", "status": str(bool(degraded)), "message": degraded},
            {"type": "Degraded", "status": str(bool(degraded)), "message": degraded},
            {"type": "RenderDegraded", "status": "False"},
        ]
        return {
            "configuration": {"name": current},
            "machineCount": machines,
            "updatedMachineCount": updated,
            "readyMachineCount": updated,
            "unavailableMachineCount": 0 if done else 1,
            "degradedMachineCount": 1 if degraded else 0,
            "conditions": conditions,
        }

    def pool(self, pool: str) -> dict[str, Any]:
        found = self.custom.get_cluster_custom_object(GROUP, VERSION, "machineconfigpools", pool)
        assert isinstance(found, dict)
        return found

    def _patch(self, pool: str, body: dict[str, Any]) -> None:
        self.custom.patch_cluster_custom_object(GROUP, VERSION, "machineconfigpools", pool, body)

    def start_update(self, pool: str, os_image_url: str) -> str:
        """The MCO renders the new config and sets it as the pool's target; no node moved."""
        current = self.pool(pool)
        machines = current["status"]["machineCount"]
        previous = current["status"]["configuration"]["name"]
        target = self._render(pool, os_image_url)
        self._patch(
            pool,
            {
                "spec": {"configuration": {"name": target}},
                "status": self._status(target, previous, machines, 0),
            },
        )
        return target

    def node_updated(self, pool: str, updated: int) -> None:
        current = self.pool(pool)
        machines = current["status"]["machineCount"]
        target = current["spec"]["configuration"]["name"]
        previous = current["status"]["configuration"]["name"]
        switched = target if updated == machines else previous
        self._patch(pool, {"status": self._status(target, switched, machines, updated)})

    def degrade(self, pool: str, message: str) -> None:
        current = self.pool(pool)
        status = current["status"]
        target = current["spec"]["configuration"]["name"]
        self._patch(
            pool,
            {
                "status": self._status(
                    target,
                    status["configuration"]["name"],
                    status["machineCount"],
                    status["updatedMachineCount"],
                    degraded=message,
                )
            },
        )


@pytest.fixture
def kube_server(tmp_path: Path) -> Iterator[KubeServer]:
    server = KubeServer(tmp_path).start()
    yield server
    server.stop()
