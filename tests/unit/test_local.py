"""`layering up`'s pure parts: the sandbox's cluster.yaml rewrite, the seeded tree (it must lint
and parse like the project's own), the webhook secret file, the registry configuration."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pipeline.adapters import fs
from pipeline.core import repo
from pipeline.core.errors import InputError
from pipeline.local import sandbox, supervisor, workdir

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE = "127.0.0.1:5000/os/fcos-stand-in@sha256:" + "a" * 64


def test_sandbox_cluster_rebases_and_keeps_only_standin_pools() -> None:
    document = {
        "environment": "prod",
        "baseImage": "quay.io/x/os@sha256:" + "b" * 64,
        "registry": "registry.example.com/layering",
        "pools": {"worker": "firewalld", "debug": "htop"},
        "promotesFrom": "nonprod",
        "soak": "24h",
        "kube": {"context": "prod-admin"},
    }
    rewritten = sandbox.sandbox_cluster(
        document,
        cluster="prod",
        base_ref=BASE,
        registry="127.0.0.1:5000/layering",
        images={"htop", "firewalld"},
    )
    assert rewritten == {
        "environment": "prod",
        "baseImage": BASE,
        "registry": "127.0.0.1:5000/layering",
        "pools": {"debug": "htop"},
        "promotesFrom": "nonprod",
        "soak": "2m",
    }
    assert document["pools"] == {"worker": "firewalld", "debug": "htop"}  # not mutated


def test_seeded_tree_is_a_valid_repository(tmp_path: Path) -> None:
    sandbox.write_seed(REPO_ROOT, tmp_path, base_ref=BASE, registry="127.0.0.1:5000/layering")
    model = fs.load(tmp_path)
    assert model.problems == ()
    assert set(model.images) == {p.name for p in (REPO_ROOT / "images").iterdir() if p.is_dir()}
    for cluster in model.clusters.values():
        assert str(cluster.base_image) == BASE
        assert dict(cluster.pools) == {"debug": "htop", "shell": "fish"}
    assert model.clusters["prod"].promotes_from == "nonprod"
    text = (tmp_path / repo.CLUSTERS_DIR / "nonprod" / repo.CLUSTER_FILE).read_text()
    assert text.startswith("# Sandbox copy made by `layering up`")


def test_webhook_secret_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "webhook-secret"
    first = sandbox.webhook_secret(path)
    assert len(first) == 64
    assert path.stat().st_mode & 0o777 == 0o600
    assert sandbox.webhook_secret(path) == first


def test_registry_configuration_listens_on_loopback_only(tmp_path: Path) -> None:
    text = sandbox.registry_config(host="127.0.0.1:5000", data=tmp_path / "data")
    assert 'addr: "127.0.0.1:5000"' in text
    assert sandbox.registries_conf("127.0.0.1:5000") == (
        '[[registry]]\nlocation = "127.0.0.1:5000"\ninsecure = true\n'
    )


def test_taken_ports_move_unless_asked_for_or_named_by_the_sandbox(tmp_path: Path) -> None:
    layout = workdir.Layout(tmp_path)
    said: list[str] = []
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        free = supervisor.free_port()

        def options(**ports: int) -> workdir.Options:
            return workdir.Options(tmp_path, ports, None, None, tmp_path)

        saved = {"receiver": free, "registry": taken, "redis": taken}
        # no sandbox yet: the remembered ports that are taken move, the others stay
        ports = supervisor.choose_ports(layout, options(), saved, said.append)
        assert ports["receiver"] == free
        assert taken not in (ports["registry"], ports["redis"])
        assert said == [
            f"127.0.0.1:{taken} is in use: registry listens on {ports['registry']} instead",
            f"127.0.0.1:{taken} is in use: redis listens on {ports['redis']} instead",
        ]
        with pytest.raises(InputError, match=f"{taken} is in use; pass another --redis-port"):
            supervisor.choose_ports(layout, options(redis=taken), saved, said.append)
        layout.repository.mkdir()
        with pytest.raises(InputError, match="names the registry there"):
            supervisor.choose_ports(layout, options(), saved, said.append)
