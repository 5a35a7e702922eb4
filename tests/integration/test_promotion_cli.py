"""`layering promote`, `layering status` and `layering base-image` as real subprocesses against
a bare Git origin with env branches, the real registry (read with skopeo), a private Redis and
kmock behind a kubeconfig: exit codes, output, and one-line errors on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from pipeline.adapters.promotion_store import PromotionStore
from pipeline.core import machineconfig, promotion_commit, rollout
from tests import services
from tests.conftest import require_tools
from tests.integration.promotion_support import BASE, EnvRepo, chained_repo, recorded_builds
from tests.plugins.builds import VERIFICATION_KEY
from tests.plugins.kube import KubeServer, MachineConfigOperator

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTEXT = "nonprod-admin"


@dataclass
class Setup:
    gitops: EnvRepo
    store: PromotionStore
    env: dict[str, str]
    kubeconfig: Path
    digests: dict[str, str]  # tag reference -> digest

    def layering(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *args],
            capture_output=True,
            text=True,
            env={**self.env, **env},
            cwd=self.gitops.path,
            timeout=60,
            check=False,
        )

    def digest(self, image: str) -> str:
        return next(d for ref, d in self.digests.items() if f"/{image}:" in ref)


def one_line_error(result: subprocess.CompletedProcess[str], command: str) -> str:
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"layering {command}: ")
    return lines[0]


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory,
    registry: services.Registry,
    containers_env: dict[str, str],
) -> Iterator[Setup]:
    require_tools("git", "redis-server", "skopeo")
    directory = tmp_path_factory.mktemp("promotion-cli")
    private_redis = services.RedisServer(directory / "redis").start()
    kube = KubeServer(directory).start()
    kubeconfig = kube.kubeconfig([CONTEXT])
    built = recorded_builds(private_redis.url)
    gitops, digests = chained_repo(
        directory / "repo", registry.host, kube_context=CONTEXT, soak="24h", built=built
    )
    built.client.close()
    mco = MachineConfigOperator(kubeconfig, CONTEXT)
    mco.seed_base(BASE + "a" * 64, release="4.16.3")
    mco.close()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("LAYERING_") and key != "KUBECONFIG"
    }
    env.update(
        containers_env,
        PYTHONPATH=str(REPO_ROOT),
        LAYERING_REDIS_URL=private_redis.url,
        LAYERING_VERIFICATION_KEY=VERIFICATION_KEY,
        LAYERING_REGISTRIES_CONF=containers_env["CONTAINERS_REGISTRIES_CONF"],
        KUBECONFIG=str(kubeconfig),
    )
    client: redis.Redis[bytes] = redis.Redis.from_url(private_redis.url)
    try:
        yield Setup(
            gitops, PromotionStore(client, key=VERIFICATION_KEY.encode()), env, kubeconfig, digests
        )
    finally:
        client.close()
        kube.stop()
        private_redis.stop()


def test_promote_dry_run_then_for_real_then_status(setup: Setup) -> None:
    gitops = setup.gitops
    merge = gitops.merge_into("main", "env/nonprod")
    origin = str(gitops.origin)
    worker_path = machineconfig.path_for("nonprod", "worker")

    dry = setup.layering("promote", "--env", "nonprod", "--repo", origin, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0] == f"Promotion of env/nonprod at {merge[:12]} (dry run: nothing is committed)"
    assert lines[-1] == "would commit 2 file change(s)"
    assert {"Plan", "Diff"} <= set(lines)
    assert f"+++ b/{worker_path}" in dry.stdout
    assert f"@{setup.digest('firewalld')}" in dry.stdout
    assert f"@{setup.digest('htop')}" in dry.stdout
    as_json = setup.layering(
        "promote", "--env", "nonprod", "--repo", origin, "--dry-run", "--format", "json"
    )
    plan = json.loads(as_json.stdout)
    assert (plan["head"], plan["refused"], plan["commit_sha"]) == (merge, False, None)
    assert {(s["action"], s["cluster"], s["pool"]) for s in plan["steps"]} == {
        ("write", "nonprod", "worker"),
        ("write", "nonprod-b", "infra"),
    }
    assert f"+++ b/{worker_path}" in plan["diff"]
    assert gitops.origin_head("env/nonprod") == merge  # nothing committed

    real = setup.layering("promote", "--env", "nonprod", "--repo", origin)
    assert real.returncode == 0, real.stderr
    committed = gitops.origin_head("env/nonprod")
    assert committed != merge
    assert f"committed {committed}" in real.stdout
    assert promotion_commit.describes_promotion(
        str(gitops.origin_history("env/nonprod")[0].message), "nonprod"
    )
    again = setup.layering("promote", "--env", "nonprod", "--repo", origin)
    assert (again.returncode, again.stdout.strip().splitlines()[-1]) == (0, "nothing committed")
    assert gitops.origin_head("env/nonprod") == committed

    # prod before nonprod verified the digest: refused, the digest named, nothing committed
    prod_merge = gitops.merge_into("main", "env/prod")
    prod = setup.layering("promote", "--env", "prod", "--repo", origin)
    assert prod.returncode == 1
    assert "Refused (one refusal stops the whole promotion)" in prod.stdout.splitlines()
    assert setup.digest("firewalld")[:19] in prod.stdout
    assert prod.stdout.splitlines()[-1] == "refused: nothing committed"
    assert gitops.origin_head("env/prod") == prod_merge
    refused = json.loads(
        setup.layering("promote", "--env", "prod", "--repo", origin, "--format", "json").stdout
    )
    assert refused["refused"] is True
    assert refused["refusals"][0]["kind"] == "unverified"
    assert refused["refusals"][0]["digest"] == setup.digest("firewalld")

    # the kube cluster: a rollout the worker would have watched
    url = f"@{setup.digest('firewalld')}"
    promoted = setup.store.promoted("nonprod")["worker"]
    assert promoted.os_image_url.endswith(url)
    setup.store.record_rollout(
        rollout.RolloutRecord(
            cluster="nonprod",
            pool="worker",
            commit_sha=committed,
            os_image_url=promoted.os_image_url,
            phase="Updating",
            updated=1,
            total=3,
            message="",
            observed_at=promoted.promoted_at,
        )
    )
    status = setup.layering("status", "--repo", origin, "--rev", "refs/heads/env/nonprod")
    assert status.returncode == 0, status.stderr
    table = " ".join(status.stdout.split())
    for fragment in ("nonprod-b", "infra", "time-based", "not verified", "Updating 1/3"):
        assert fragment in table
    # piped: a section per environment, plain columns, whole values (nothing cut or boxed)
    lines = status.stdout.splitlines()
    assert "Environment nonprod (env/nonprod)" in lines
    assert "Environment prod (env/prod)" in lines
    assert not set("│┃━─…") & set(status.stdout)
    header = lines[lines.index("Environment nonprod (env/nonprod)") + 1]
    columns = ["CLUSTER", "POOL", "IMAGE", "DIGEST", "VERIFICATION", "ROLLOUT", "BASE"]
    assert header.split() == columns
    row = next(line for line in lines if line.startswith("nonprod-b "))
    assert setup.digest("htop") in row
    assert "time-based (no kube access): promoted " in row
    as_json = setup.layering(
        "status", "--repo", origin, "--rev", "refs/heads/env/nonprod", "--format", "json"
    )
    rows = {(row["cluster"], row["pool"]): row for row in json.loads(as_json.stdout)}
    assert rows[("nonprod", "worker")]["digest"] == setup.digest("firewalld")
    assert rows[("nonprod", "worker")]["verification"] == "not verified"
    assert rows[("nonprod", "worker")]["rollout"] == "Updating 1/3"
    assert rows[("nonprod-b", "infra")]["digest"] == setup.digest("htop")
    assert rows[("nonprod-b", "infra")]["verification"].startswith("time-based (no kube access)")
    assert rows[("prod", "worker")]["digest"] == "-"


def test_promote_refuses_bad_input_in_one_line(setup: Setup, tmp_path: Path) -> None:
    origin = str(setup.gitops.origin)
    unknown = setup.layering("promote", "--env", "staging", "--repo", origin, "--dry-run")
    assert unknown.returncode == 1
    assert "has no branch env/staging" in one_line_error(unknown, "promote")

    missing = setup.layering("promote", "--env", "nonprod", "--repo", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert "no such directory" in one_line_error(missing, "promote")
    not_git = setup.layering("promote", "--env", "nonprod", "--repo", str(tmp_path))
    assert not_git.returncode == 2
    assert "not a Git repository" in one_line_error(not_git, "promote")

    dead = f"redis://127.0.0.1:{services.free_port()}/0"
    for args in (
        ("promote", "--env", "nonprod", "--repo", origin),
        ("promote", "--env", "prod", "--repo", origin, "--dry-run"),  # reads verifications
        ("status", "--repo", origin, "--rev", "refs/heads/main"),
    ):
        down = setup.layering(*args, LAYERING_REDIS_URL=dead)
        assert down.returncode == 1
        assert "Redis" in one_line_error(down, args[0])
    bad_rev = setup.layering("status", "--repo", origin, "--rev", "no-such-branch")
    assert bad_rev.returncode in (1, 2)
    one_line_error(bad_rev, "status")


def test_base_image_over_a_kubeconfig(setup: Setup, tmp_path: Path) -> None:
    matches = setup.layering("base-image", "--cluster", "nonprod")
    assert matches.returncode == 0, matches.stderr
    assert matches.stdout.startswith("Base image of cluster nonprod (kube context nonprod-admin)\n")
    assert "releaseVersion:                4.16.3" in matches.stdout
    assert matches.stdout.strip().endswith("matches")
    mco = MachineConfigOperator(setup.kubeconfig, CONTEXT)
    mco.core.patch_namespaced_config_map(
        "machine-config-osimageurl",
        "openshift-machine-config-operator",
        {"data": {"baseOSContainerImage": BASE + "e" * 64, "releaseVersion": "4.16.9"}},
    )
    mco.close()
    drift = setup.layering("base-image", "--cluster", "nonprod")
    assert drift.returncode == 1, drift.stderr
    assert f"cluster baseOSContainerImage:  {BASE}{'e' * 64}" in drift.stdout
    assert "DRIFT" in drift.stdout
    assert "set baseImage in clusters/nonprod/cluster.yaml" in drift.stdout
    as_json = setup.layering("base-image", "--cluster", "nonprod", "--format", "json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {
        "cluster": "nonprod",
        "context": CONTEXT,
        "expected": BASE + "a" * 64,
        "actual": BASE + "e" * 64,
        "release_version": "4.16.9",
        "drifted": True,
    }

    no_kube = setup.layering("base-image", "--cluster", "nonprod-b")
    assert no_kube.returncode == 2
    assert "no kube.context" in one_line_error(no_kube, "base-image")
    unknown = setup.layering("base-image", "--cluster", "qa")
    assert unknown.returncode == 2
    assert "unknown cluster 'qa' (known: nonprod, nonprod-b, prod)" in one_line_error(
        unknown, "base-image"
    )
    other = tmp_path / "kubeconfig"
    other.write_text(setup.kubeconfig.read_text().replace(CONTEXT, "someone-else"))
    no_context = setup.layering("base-image", "--cluster", "nonprod", KUBECONFIG=str(other))
    assert no_context.returncode == 1
    assert f"kube context {CONTEXT!r}" in one_line_error(no_context, "base-image")
    port = services.free_port()
    unreachable = tmp_path / "unreachable"
    unreachable.write_text(
        setup.kubeconfig.read_text().replace(
            setup.kubeconfig.read_text().split("server: ")[1].split()[0],
            f"http://127.0.0.1:{port}",
        )
    )
    down = setup.layering("base-image", "--cluster", "nonprod", KUBECONFIG=str(unreachable))
    assert down.returncode == 1
    assert "ConfigMap openshift-machine-config-operator" in one_line_error(down, "base-image")
