"""Read a cluster's Machine Config Operator state with the official `kubernetes` client: the
MachineConfigPool, the rendered MachineConfig it targets, the machine-config-osimageurl
ConfigMap; watch a pool until rolled out or degraded. Does network I/O.

    cluster = KubeCluster.connect(kubeconfig=settings.kubeconfig, context="nonprod-admin")
    KubeClusters(settings.kubeconfig).connect("nonprod-admin")   # the same, as ports.Clusters
    cluster.pool("worker") / cluster.machineconfig("rendered-worker-…") / cluster.base_image()
    cluster.rollout_state("worker", expected_os_image_url=...)
    cluster.running("worker")   # what the pool runs now: rendered osImageURL, settled or not
    cluster.watch_rollout("worker", expected_os_image_url=..., timeout=600, on_change=...)

Errors: ApiException and connection failures become TemporaryError (5xx, 429, refused,
timeouts) or PermanentError (401/403, a missing context or kubeconfig); a missing object reads
as None.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from pipeline.core import drift, rollout
from pipeline.core.errors import PermanentError, TemporaryError

GROUP = "machineconfiguration.openshift.io"
VERSION = "v1"
POOLS = "machineconfigpools"
MACHINECONFIGS = "machineconfigs"
MCO_NAMESPACE = "openshift-machine-config-operator"
OSIMAGEURL_CONFIGMAP = "machine-config-osimageurl"
_READ_TIMEOUT = 30


def _raise(action: str, context: str, exc: Exception) -> NoReturn:
    where = f"{action} on cluster context {context!r}"
    if isinstance(exc, ApiException):
        reason = f"HTTP {exc.status} {exc.reason}"
        if exc.status in (401, 403):
            raise PermanentError(
                f"{where}: {reason}; grant the pipeline's account read access "
                "to machineconfigpools, machineconfigs and the MCO's configmaps"
            ) from exc
        if exc.status is not None and (exc.status >= 500 or exc.status == 429):
            raise TemporaryError(f"{where}: {reason}") from exc
        raise PermanentError(f"{where}: {reason}") from exc
    raise TemporaryError(f"{where}: {type(exc).__name__}: {exc}") from exc


class KubeCluster:
    def __init__(self, api_client: client.ApiClient, *, context: str) -> None:
        self._api = api_client
        self._context = context
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)

    @classmethod
    def connect(cls, *, kubeconfig: Path | None, context: str) -> KubeCluster:
        try:
            api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig) if kubeconfig else None, context=context
            )
        except (ConfigException, OSError) as exc:
            raise PermanentError(
                f"kube context {context!r}: cannot load it from "
                f"{kubeconfig or '~/.kube/config'}: {exc}; check KUBECONFIG and cluster.yaml "
                "kube.context"
            ) from exc
        return cls(api_client, context=context)

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> KubeCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _get(self, action: str, read: Callable[[], Any]) -> dict[str, Any] | None:
        try:
            found = read()
        except ApiException as exc:
            if exc.status == 404:
                return None
            _raise(action, self._context, exc)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            _raise(action, self._context, exc)
        return found if isinstance(found, dict) else self._api.sanitize_for_serialization(found)  # type: ignore[no-untyped-call]

    def pool(self, name: str) -> dict[str, Any] | None:
        return self._get(
            f"read MachineConfigPool {name}",
            lambda: self._custom.get_cluster_custom_object(
                GROUP, VERSION, POOLS, name, _request_timeout=_READ_TIMEOUT
            ),
        )

    def machineconfig(self, name: str) -> dict[str, Any] | None:
        return self._get(
            f"read MachineConfig {name}",
            lambda: self._custom.get_cluster_custom_object(
                GROUP, VERSION, MACHINECONFIGS, name, _request_timeout=_READ_TIMEOUT
            ),
        )

    def base_image(self) -> drift.BaseImage | None:
        """What the MCO says the cluster's stock OS image is (the ConfigMap of SPEC 7)."""
        found = self._get(
            f"read ConfigMap {MCO_NAMESPACE}/{OSIMAGEURL_CONFIGMAP}",
            lambda: self._core.read_namespaced_config_map(
                OSIMAGEURL_CONFIGMAP, MCO_NAMESPACE, _request_timeout=_READ_TIMEOUT
            ),
        )
        if found is None:
            return None
        data = found.get("data") or {}
        return drift.BaseImage(
            base_os_container_image=str(data.get("baseOSContainerImage", "")),
            release_version=str(data.get("releaseVersion", "")),
        )

    def rendered_os_image_url(self, pool_object: dict[str, Any]) -> str | None:
        target = ((pool_object.get("spec") or {}).get("configuration") or {}).get("name")
        if not target:
            return None
        rendered = self.machineconfig(str(target))
        if rendered is None:
            return None
        url = (rendered.get("spec") or {}).get("osImageURL")
        return str(url) if url else None

    def rollout_state(self, pool: str, *, expected_os_image_url: str) -> rollout.RolloutState:
        pool_object = self.pool(pool)
        if pool_object is None:
            raise PermanentError(
                f"MachineConfigPool {pool!r} does not exist on cluster context "
                f"{self._context!r}; check the pool names in cluster.yaml"
            )
        return self._state(pool_object, expected_os_image_url)

    def running(self, pool: str) -> rollout.Running | None:
        """What `pool` runs now, read afresh (the prod gate's check of its upstream)."""
        pool_object = self.pool(pool)
        if pool_object is None:
            return None
        return rollout.running(
            pool_object, rendered_os_image_url=self.rendered_os_image_url(pool_object)
        )

    def _state(self, pool_object: dict[str, Any], expected: str) -> rollout.RolloutState:
        return rollout.state(
            pool_object,
            rendered_os_image_url=self.rendered_os_image_url(pool_object),
            expected_os_image_url=expected,
        )

    def watch_rollout(
        self,
        pool: str,
        *,
        expected_os_image_url: str,
        timeout: float,
        on_change: Callable[[rollout.RolloutState], None] = lambda state: None,
    ) -> rollout.RolloutState:
        """Follow the pool until Updated or Degraded, or `timeout` seconds (then its last
        state, still Updating). `on_change` sees every distinct state."""
        deadline = time.monotonic() + timeout
        last = self.rollout_state(pool, expected_os_image_url=expected_os_image_url)
        on_change(last)
        while not last.done and time.monotonic() < deadline:
            remaining = max(1.0, deadline - time.monotonic())
            stream = watch.Watch()  # type: ignore[no-untyped-call]
            try:
                for event in stream.stream(  # type: ignore[no-untyped-call]
                    self._custom.list_cluster_custom_object,
                    GROUP,
                    VERSION,
                    POOLS,
                    field_selector=f"metadata.name={pool}",
                    timeout_seconds=int(remaining),
                    _request_timeout=min(remaining, _READ_TIMEOUT),
                ):
                    pool_object = event.get("object")
                    if not isinstance(pool_object, dict):
                        continue
                    if (pool_object.get("metadata") or {}).get("name") != pool:
                        continue  # servers that ignore the field selector
                    state = self._state(pool_object, expected_os_image_url)
                    if state != last:
                        last = state
                        on_change(state)
                    if last.done or time.monotonic() >= deadline:
                        break
            except ApiException as exc:
                if exc.status == 410:  # resourceVersion too old: start a fresh watch
                    continue
                _raise(f"watch MachineConfigPool {pool}", self._context, exc)
            except (urllib3.exceptions.ReadTimeoutError, TimeoutError):
                pass  # quiet pool: read it again below and keep watching
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                _raise(f"watch MachineConfigPool {pool}", self._context, exc)
            finally:
                stream.stop()  # type: ignore[no-untyped-call]
            if not last.done:
                state = self.rollout_state(pool, expected_os_image_url=expected_os_image_url)
                if state != last:
                    last = state
                    on_change(state)
        return last


class KubeClusters:
    """ports.Clusters: a KubeCluster per kube context of one kubeconfig (None: the default,
    ~/.kube/config or $KUBECONFIG)."""

    def __init__(self, kubeconfig: Path | None) -> None:
        self._kubeconfig = kubeconfig

    def connect(self, context: str) -> KubeCluster:
        return KubeCluster.connect(kubeconfig=self._kubeconfig, context=context)
