"""Rollout watch over real HTTP: the kmock emulator serves MachineConfigPools, MachineConfigs and
the MCO ConfigMap to the real `kubernetes` client; a stand-in MCO moves the pool."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from pipeline.adapters import kube
from pipeline.adapters.promotion_store import PromotionStore
from pipeline.core import machineconfig, repo, verification, yamlfile
from pipeline.flows import drift as drift_flow
from pipeline.flows import rollout_watch
from tests import services
from tests.integration.promotion_support import Recorder
from tests.plugins.builds import VERIFICATION_KEY
from tests.plugins.kube import KubeServer, MachineConfigOperator

pytestmark = pytest.mark.integration
BASE = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "a" * 64
URL = "registry.example.com/layering/firewalld@sha256:" + "c" * 64
COMMIT = "7" * 40


@pytest.fixture
def store(redis_server: services.RedisServer) -> Iterator[PromotionStore]:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield PromotionStore(client, key=VERIFICATION_KEY.encode())
    client.close()


def model_with_machineconfig() -> repo.Repository:
    cluster = yamlfile.dump(
        {
            "environment": "nonprod",
            "baseImage": BASE,
            "registry": "registry.example.com/layering",
            "pools": {"worker": "firewalld"},
            "kube": {"context": "nonprod-admin"},
        }
    )
    os_image = machineconfig.OsImage(
        image="firewalld",
        repository="registry.example.com/layering/firewalld",
        digest="sha256:" + "c" * 64,
        build_key="d" * 64,
        source_commit=COMMIT,
        base_image=BASE,
    )
    return repo.parse_files(
        {
            "images/firewalld/Containerfile": b"FROM x\n",
            "clusters/nonprod/cluster.yaml": cluster,
            machineconfig.path_for("nonprod", "worker"): machineconfig.render_yaml(
                pool="worker", os_image=os_image
            ),
        },
        {"firewalld": "1" * 40},
    )


def play(steps: list[Callable[[], None]]) -> threading.Thread:
    def run() -> None:
        for step in steps:
            time.sleep(0.2)
            step()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def watch(server: KubeServer, store: PromotionStore, recorder: Recorder) -> dict[str, object]:
    kubeconfig = server.kubeconfig(["nonprod-admin"])
    with kube.KubeCluster.connect(kubeconfig=kubeconfig, context="nonprod-admin") as reader:
        return dict(
            rollout_watch.watch_rollout(
                model_with_machineconfig(),
                commit_sha=COMMIT,
                cluster="nonprod",
                reader=reader,
                store=store,
                reporter=recorder,
                now=time.time,
                timeout=20,
            )
        )


def test_statuses_follow_the_mco_to_updated(kube_server: KubeServer, store: PromotionStore) -> None:
    mco = MachineConfigOperator(kube_server.kubeconfig(["nonprod-admin"]), "nonprod-admin")
    mco.create_pool("worker", machines=3, os_image_url=BASE)
    thread = play(
        [
            lambda: mco.start_update("worker", URL),
            lambda: mco.node_updated("worker", 1),
            lambda: mco.node_updated("worker", 2),
            lambda: mco.node_updated("worker", 3),
        ]
    )
    recorder = Recorder()
    states = watch(kube_server, store, recorder)
    thread.join()
    assert {pool: str(state.phase) for pool, state in states.items()} == {"worker": "Updated"}  # type: ignore[attr-defined]
    context = "layering/rollout/nonprod"
    descriptions = [d for _, c, _, d in recorder.statuses if c == context]
    assert recorder.states(context)[-1] == "success"
    assert set(recorder.states(context)[:-1]) == {"pending"}
    assert "worker: 1/3 machines updated" in descriptions
    assert "worker: 2/3 machines updated" in descriptions
    assert all(sha == COMMIT for sha, *_ in recorder.statuses)
    proven = store.verifications(["nonprod"])[("nonprod", "sha256:" + "c" * 64)]
    assert proven.healthy
    assert proven.method is verification.VerificationMethod.ROLLOUT
    mco.close()


def test_degraded_pool_fails_with_the_mco_message(
    kube_server: KubeServer, store: PromotionStore
) -> None:
    mco = MachineConfigOperator(kube_server.kubeconfig(["nonprod-admin"]), "nonprod-admin")
    mco.create_pool("worker", machines=2, os_image_url=BASE)
    message = 'Node worker-1 is reporting: "failed to rebase onto the new image"'
    thread = play(
        [
            lambda: mco.start_update("worker", URL),
            lambda: mco.node_updated("worker", 1),
            lambda: mco.degrade("worker", message),
        ]
    )
    recorder = Recorder()
    watch(kube_server, store, recorder)
    thread.join()
    sha, _, state, description = recorder.last("layering/rollout/nonprod")
    assert (sha, state) == (COMMIT, "failure")
    assert "failed to rebase onto the new image" in description
    proven = store.verifications(["nonprod"])[("nonprod", "sha256:" + "c" * 64)]
    assert not proven.healthy
    assert "failed to rebase" in proven.message
    mco.close()


def test_base_drift_reads_the_configmap(kube_server: KubeServer, store: PromotionStore) -> None:
    kubeconfig = kube_server.kubeconfig(["nonprod-admin"])
    mco = MachineConfigOperator(kubeconfig, "nonprod-admin")
    newer = BASE.replace("a" * 64, "e" * 64)
    mco.seed_base(newer, release="4.16.9")
    cluster = model_with_machineconfig().clusters["nonprod"]
    with kube.KubeCluster.connect(kubeconfig=kubeconfig, context="nonprod-admin") as reader:
        drift = drift_flow.check_base_drift(cluster, reader, store=store, now=time.time())
    assert drift.drifted
    assert (drift.actual, drift.release_version) == (newer, "4.16.9")
    assert store.drift()["nonprod"] == drift
    mco.close()
