"""Building ahead of a cluster upgrade (issue 14), with real components: release payload
images built with buildah in the real layout (a layer holding release-manifests/image-references
on top of one that does not) pushed to docker-registry, `layering upgrade` reading only the
layer it needs, `--open-pr` pushing a branch to a bare Git repository and opening its pull
request through the GitHub stand-in (OpenAPI-checked), that pull request built by a real worker
on the new base, and a drift seen through kmock opening the same pull request once."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import git
import httpx
import pytest
import redis

from pipeline import cli
from pipeline.adapters import branch_writer, env_branches, kube, promotion_store, upgrade_requests
from pipeline.adapters import registry as registry_adapter
from pipeline.core import content_address, ports_upgrade, upgrade
from pipeline.flows import drift as drift_flow
from pipeline.flows import upgrade as upgrade_flow
from tests import services, webhook_pipeline
from tests.integration import pull_request_support
from tests.plugins.builds import FAKE_TOKEN, BaseImage, BuildahStorage, StartWorker, _run
from tests.plugins.github import GitHubStandIn
from tests.plugins.gitrepos import GitopsRepo
from tests.plugins.kube import KubeServer, MachineConfigOperator

PAYLOAD_REPOSITORY = "openshift/release"
IMAGE_REFERENCES = "release-manifests/image-references"
READ_TOKEN = "upgrade-read-token-0123456789abcdef"


@dataclass(frozen=True)
class Payloads:
    new_base: str  # the node image the good payload names: <registry>/os/fcos-stand-in@sha256:…
    good: str  # by tag
    good_by_digest: str
    good_layers: list[str]  # oldest first
    no_node_tag: str
    node_by_tag: str


def _image_references(tags: dict[str, str]) -> str:
    return json.dumps(
        {
            "kind": "ImageStream",
            "apiVersion": "image.openshift.io/v1",
            "metadata": {"name": "4.99.0", "creationTimestamp": None},
            "spec": {
                "lookupPolicy": {"local": False},
                "tags": [
                    {"name": name, "from": {"kind": "DockerImage", "name": reference}}
                    for name, reference in tags.items()
                ],
            },
        },
        indent=2,
    )


def _push_payload(
    work: Path, storage: BuildahStorage, host: str, tag: str, tags: dict[str, str]
) -> tuple[str, list[str]]:
    """A payload in the real layout: a lower layer without image-references (the real ones
    hold the operators' binaries), the release-manifests layer on top. (digest, layer digests
    oldest first)."""
    buildah = storage.argv()
    lower, upper = work / f"{tag}-lower", work / f"{tag}-upper"
    (lower / "usr/share/payload").mkdir(parents=True)
    (lower / "usr/share/payload/README").write_text("operator binaries live here\n" * 200)
    (upper / "release-manifests").mkdir(parents=True)
    (upper / IMAGE_REFERENCES).write_text(_image_references(tags))
    (upper / "release-manifests/release-metadata").write_text('{"version": "4.99.0"}\n')
    container = _run([*buildah, "from", "scratch"]).strip()
    _run([*buildah, "copy", container, str(lower), "/"])
    _run([*buildah, "commit", "--rm", container, f"localhost/payload-lower-{tag}"])
    container = _run([*buildah, "from", f"localhost/payload-lower-{tag}"]).strip()
    _run([*buildah, "copy", container, str(upper), "/"])
    _run([*buildah, "commit", "--rm", container, f"localhost/payload-{tag}"])
    digestfile = work / f"{tag}.digest"
    _run(
        [
            *buildah,
            "push",
            "--digestfile",
            str(digestfile),
            f"localhost/payload-{tag}",
            f"docker://{host}/{PAYLOAD_REPOSITORY}:{tag}",
        ]
    )
    manifest = httpx.get(
        f"http://{host}/v2/{PAYLOAD_REPOSITORY}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    ).json()
    return digestfile.read_text().strip(), [layer["digest"] for layer in manifest["layers"]]


@pytest.fixture(scope="module")
def payloads(
    tmp_path_factory: pytest.TempPathFactory,
    registry: services.Registry,
    buildah_storage: BuildahStorage,
    base_image: BaseImage,
    containers_env: dict[str, str],
) -> Payloads:
    work = tmp_path_factory.mktemp("payloads")
    buildah = buildah_storage.argv()
    # the new base: the stand-in OS image with one more file, pushed beside it
    container = _run([*buildah, "from", base_image.ref]).strip()
    marker = work / "new-base"
    marker.write_text("4.99.0\n")
    _run([*buildah, "copy", container, str(marker), "/etc/new-base"])
    _run([*buildah, "commit", "--rm", container, "localhost/new-base"])
    digestfile = work / "new-base.digest"
    _run(
        [
            *buildah,
            "push",
            "--digestfile",
            str(digestfile),
            "localhost/new-base",
            f"docker://{base_image.repository}:next",
        ]
    )
    new_base = f"{base_image.repository}@{digestfile.read_text().strip()}"
    host = registry.host
    other = f"{host}/openshift/cli@sha256:{'c' * 64}"
    digest, layers = _push_payload(
        work, buildah_storage, host, "4.99.0", {"cli": other, "rhel-coreos": new_base}
    )
    _push_payload(work, buildah_storage, host, "no-node", {"cli": other, "installer": other})
    _push_payload(
        work, buildah_storage, host, "by-tag", {"rhel-coreos": f"{base_image.repository}:next"}
    )
    return Payloads(
        new_base=new_base,
        good=f"{host}/{PAYLOAD_REPOSITORY}:4.99.0",
        good_by_digest=f"{host}/{PAYLOAD_REPOSITORY}@{digest}",
        good_layers=layers,
        no_node_tag=f"{host}/{PAYLOAD_REPOSITORY}:no-node",
        node_by_tag=f"{host}/{PAYLOAD_REPOSITORY}:by-tag",
    )


CLUSTER_YAML = """\
# Non-production: every image is tried here first.
environment: nonprod
baseImage: {base}   # the cluster's stock OS image
registry: {registry}/layering
pools:
  worker: firewalld
  infra: chrony
{extra}"""


def _checkout(
    directory: Path, base: BaseImage, registry_host: str, *, extra: str = ""
) -> GitopsRepo:
    gitops = GitopsRepo(directory / "work", directory / "origin.git")
    for image in ("firewalld", "chrony", "unused"):
        gitops.write(
            f"images/{image}/Containerfile",
            f"FROM {base.repository}\nRUN echo {image} > /etc/motd && \\\n"
            "    ostree container commit\n",
        )
    gitops.write(
        "clusters/nonprod/cluster.yaml",
        CLUSTER_YAML.format(base=base.ref, registry=registry_host, extra=extra),
    )
    gitops.commit("seed")
    gitops.push()
    return gitops


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("LAYERING_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LAYERING_WORKDIR", str(tmp_path / "layering"))


def test_upgrade_prints_the_bases_and_reads_only_the_manifests_layer(
    tmp_path: Path,
    registry: services.Registry,
    base_image: BaseImage,
    payloads: Payloads,
    settings_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gitops = _checkout(tmp_path, base_image, registry.host)
    for release in (payloads.good, payloads.good_by_digest):
        mark = registry.log_size()
        argv = ["upgrade", "--cluster", "nonprod", "--release", release, "--repo", str(gitops.path)]
        assert cli.main(argv) == 0
        out = capsys.readouterr().out
        assert f"current base:  {base_image.ref}\n" in out
        assert f"new base:      {payloads.new_base}  (rhel-coreos)\n" in out
        assert "  firewalld@nonprod  pools worker  " in out
        assert "  chrony@nonprod  pools infra  " in out
        assert "unused" not in out
        # one blob read: the top layer, the one holding release-manifests/
        blobs = [path for method, path, _ in registry.requests(mark) if "/blobs/" in path]
        assert blobs == [f"/v2/{PAYLOAD_REPOSITORY}/blobs/{payloads.good_layers[-1]}"]
    assert len(payloads.good_layers) == 2

    # a plain Git server (no GitHub settings): the branch is pushed to the checkout's origin
    argv = [*argv, "--open-pr"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    branch = upgrade.branch_for("nonprod", payloads.new_base)
    assert f"pushed branch {branch}; this Git server has no pull request API here: open a " in out
    assert f"merge request from {branch} into main by hand" in out
    assert _origin_head(gitops.origin, branch) is not None


@pytest.mark.parametrize(
    ("which", "expected"),
    [
        (
            "no_node_tag",
            "no node OS image tag rhel-coreos or stream-coreos or fedora-coreos in "
            "release-manifests/image-references (its tags: cli, installer)",
        ),
        (
            "node_by_tag",
            "tag rhel-coreos names {repo}:next by tag; a node OS image must be named by digest",
        ),
        ("unreachable", "registry 127.0.0.1:{port} unreachable"),
        ("missing", "not found in registry"),
    ],
)
def test_bad_input_is_one_clear_line(
    which: str,
    expected: str,
    tmp_path: Path,
    registry: services.Registry,
    base_image: BaseImage,
    payloads: Payloads,
    settings_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gitops = _checkout(tmp_path, base_image, registry.host)
    port = services.free_port()
    release = {
        "no_node_tag": payloads.no_node_tag,
        "node_by_tag": payloads.node_by_tag,
        "unreachable": f"127.0.0.1:{port}/openshift/release:4.99.0",
        "missing": f"{registry.host}/{PAYLOAD_REPOSITORY}:4.0.0",
    }[which]
    argv = ["upgrade", "--cluster", "nonprod", "--release", release, "--repo", str(gitops.path)]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    message = captured.err.strip()
    assert "\n" not in message, message
    assert message.startswith("layering upgrade: ")
    assert expected.format(repo=base_image.repository, port=port) in message


def _origin_head(origin: Path, branch: str) -> str | None:
    try:
        return str(git.Repo(origin).git.rev_parse("--verify", "-q", f"refs/heads/{branch}"))
    except git.GitCommandError:
        return None


def test_open_pr_builds_on_the_new_base(
    tmp_path: Path,
    registry: services.Registry,
    base_image: BaseImage,
    payloads: Payloads,
    start_worker: StartWorker,
    settings_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with webhook_pipeline.launch(
        tmp_path,
        registry=registry,
        base_image=base_image,
        start_worker=start_worker,
        name="upg",
        extra_env={"LAYERING_READ_TOKEN": READ_TOKEN},
    ) as pipeline:
        origin = pipeline.gitops.origin
        pipeline.github.branch_head = lambda ref: _origin_head(origin, ref)
        for name, value in {
            "LAYERING_REPO_URL": origin.as_uri(),
            "LAYERING_GITHUB_REPOSITORY": webhook_pipeline.FULL_NAME,
            "LAYERING_GITHUB_API_URL": pipeline.github.url,
            "LAYERING_GITHUB_TOKEN": FAKE_TOKEN,
        }.items():
            monkeypatch.setenv(name, value)
        seed = (pipeline.gitops.path / "clusters/nonprod/cluster.yaml").read_bytes()
        argv = [
            "upgrade", "--cluster", "nonprod", "--release", payloads.good, "--open-pr",
            "--repo", str(pipeline.gitops.path), "--format", "json",
        ]  # fmt: skip
        assert cli.main(argv) == 0
        shown = json.loads(capsys.readouterr().out)
        branch = upgrade.branch_for("nonprod", payloads.new_base)
        assert (shown["branch"], shown["pull_request"]) == (branch, 1)
        assert shown["new_base"] == payloads.new_base
        pull = pipeline.github.pulls[1]
        assert (pull["head"]["ref"], pull["base"]["ref"]) == (branch, "main")
        assert payloads.new_base in pull["body"]
        head = _origin_head(origin, branch)
        assert head is not None
        bumped = git.Repo(origin).git.show(f"{head}:clusters/nonprod/cluster.yaml")
        expected = seed.decode().replace(base_image.ref, payloads.new_base)
        assert bumped.rstrip("\n") == expected.rstrip("\n")

        # GitHub publishes the head as refs/pull/1/head; the normal pull-request flow builds
        git.Repo(origin).git.update_ref("refs/pull/1/head", head)
        answer = pipeline.deliver(
            pipeline.pull_payload("opened", 1, head, branch), event="pull_request"
        )
        assert answer.status_code == 202, answer.text
        contexts = {"layering/build/firewalld@nonprod", "layering/build/chrony@nonprod"}
        states = pipeline.wait_statuses(head, contexts)
        assert {context: states[context][-1] for context in contexts} == dict.fromkeys(
            contexts, "success"
        ), states
        reader = registry_adapter.Registry(registries_conf=registry.registries_conf)
        for rebuilt in shown["rebuilds"]:
            tag = content_address.tag(rebuilt["build_key"])
            built = reader.image_of(f"{registry.host}/layering/{rebuilt['image']}:{tag}")
            assert built is not None, rebuilt
            base_digest = payloads.new_base.rpartition("@")[2]
            assert built.labels["org.opencontainers.image.base.digest"] == base_digest

        # asked again: the same pull request, updated, and no new push
        assert cli.main(argv) == 0
        again = json.loads(capsys.readouterr().out)
        assert again["pull_request"] == 1
        assert list(pipeline.github.pulls) == [1]
        assert _origin_head(origin, branch) == head

        # through the API, as the task on a worker: the same pull request again
        url = f"{pipeline.receiver_url}/api/upgrades"
        asked = {"cluster": "nonprod", "release": payloads.good_by_digest}
        assert httpx.post(url, json=asked, timeout=30).status_code == 401
        bearer = {"Authorization": f"Bearer {READ_TOKEN}"}
        refused = httpx.post(url, json={"cluster": "nonprod"}, headers=bearer, timeout=30)
        assert (refused.status_code, refused.json()["error"]) == (
            400,
            "release: required, the release payload image (by tag or digest)",
        )
        queued = httpx.post(url, json=asked, headers=bearer, timeout=30)
        assert queued.status_code == 202, queued.text
        done = pipeline.wait_task(queued.json()["task_id"], timeout=120)
        assert (done["branch"], done["pull_request"]) == (branch, 1)
        assert list(pipeline.github.pulls) == [1]
        assert _origin_head(origin, branch) == head


def test_drift_opens_the_upgrade_pull_request_once(
    tmp_path: Path,
    redis_server: services.RedisServer,
    kube_server: KubeServer,
    github_api: GitHubStandIn,
) -> None:
    context = "nonprod-admin"
    old_base = BaseImage("127.0.0.1:5000/os/fcos-stand-in", "sha256:" + "a" * 64)
    new_base = f"{old_base.repository}@sha256:{'e' * 64}"
    gitops = _checkout(tmp_path, old_base, "127.0.0.1:5000", extra=f"kube:\n  context: {context}\n")
    origin = gitops.origin.as_uri()
    github_api.branch_head = lambda ref: _origin_head(gitops.origin, ref)
    mco = MachineConfigOperator(kube_server.kubeconfig([context]), context)
    mco.seed_base(new_base, release="4.99.0")
    mco.close()
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    requests = upgrade_requests.GitHubUpgradeRequests(pull_request_support.client(github_api))
    branches = upgrade_requests.UpgradeBranches(
        url=origin, workdir=tmp_path / "upgrades", lock=branch_writer.RedisBranchLock(client)
    )
    claims = upgrade_requests.RedisUpgradeClaims(client)
    opened: list[upgrade_flow.Opened | None] = []

    def check() -> dict[str, bool]:
        return drift_flow.run(
            default_branch="main",
            branches=env_branches.MirrorBranches.for_url(tmp_path / "mirror", origin),
            clusters=kube.KubeClusters(kube_server.directory / "kubeconfig"),
            store=promotion_store.PromotionStore(client, key=None),
            now=lambda: 1.0,
            on_drift=lambda cluster, checked: opened.append(
                upgrade_flow.on_drift(
                    cluster,
                    checked,
                    default_branch="main",
                    branches=branches,
                    requests=requests,
                    claims=claims,
                )
            ),
        )

    assert check() == {"nonprod": True}
    assert check() == {"nonprod": True}
    branch = upgrade.branch_for("nonprod", new_base)
    assert [o.pull_request if o else None for o in opened] == [1, None]
    assert list(github_api.pulls) == [1]
    assert github_api.pulls[1]["head"]["ref"] == branch
    assert "4.99.0 (running on the cluster)" in github_api.pulls[1]["body"]
    assert github_api.attempts("pulls/create") == 1
    head = _origin_head(gitops.origin, branch)
    shown = git.Repo(gitops.origin).git.show(f"{head}:clusters/nonprod/cluster.yaml")
    assert f"baseImage: {new_base}   # the cluster's stock OS image" in shown

    # the claim gone (expired, or asked for through the CLI or API): updated, not duplicated
    client.flushdb()
    assert check() == {"nonprod": True}
    assert opened[-1] is not None
    assert opened[-1].pull_request == 1
    assert list(github_api.pulls) == [1]
    assert _origin_head(gitops.origin, branch) == head


@pytest.mark.chaos
def test_a_drift_run_killed_before_its_pull_request_does_not_block_the_upgrade(
    tmp_path: Path,
    redis_server: services.RedisServer,
    kube_server: KubeServer,
    github_api: GitHubStandIn,
) -> None:
    """The drift run that claimed a new base is SIGKILLed while it pushes the branch: no
    `finally` runs, so its claim stays. The next run inside the pending window leaves the
    upgrade alone; once the unsettled claim lapses, a run opens the pull request, once."""
    context = "nonprod-admin"
    old_base = BaseImage("127.0.0.1:5000/os/fcos-stand-in", "sha256:" + "a" * 64)
    new_base = f"{old_base.repository}@sha256:{'d' * 64}"
    gitops = _checkout(tmp_path, old_base, "127.0.0.1:5000", extra=f"kube:\n  context: {context}\n")
    origin = gitops.origin.as_uri()
    github_api.branch_head = lambda ref: _origin_head(gitops.origin, ref)
    mco = MachineConfigOperator(kube_server.kubeconfig([context]), context)
    mco.seed_base(new_base, release="4.99.1")
    mco.close()
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    pending = 3

    def run_drift(branches: ports_upgrade.UpgradeBranches) -> list[upgrade_flow.Opened | None]:
        opened: list[upgrade_flow.Opened | None] = []
        drift_flow.run(
            default_branch="main",
            branches=env_branches.MirrorBranches.for_url(tmp_path / "mirror", origin),
            clusters=kube.KubeClusters(kube_server.directory / "kubeconfig"),
            store=promotion_store.PromotionStore(client, key=None),
            now=lambda: 1.0,
            on_drift=lambda cluster, checked: opened.append(
                upgrade_flow.on_drift(
                    cluster,
                    checked,
                    default_branch="main",
                    branches=branches,
                    requests=upgrade_requests.GitHubUpgradeRequests(
                        pull_request_support.client(github_api)
                    ),
                    claims=upgrade_requests.RedisUpgradeClaims(client, pending_ttl=pending),
                )
            ),
        )
        return opened

    real = upgrade_requests.UpgradeBranches(
        url=origin, workdir=tmp_path / "upgrades", lock=branch_writer.RedisBranchLock(client)
    )

    class Hanging:
        """Pushes nothing: the worker is killed while it is here."""

        def push(self, branch: str, **_: object) -> object:
            marker.write_text("pushing")
            time.sleep(600)
            raise AssertionError("not killed")

    marker = tmp_path / "pushing"
    child = multiprocessing.get_context("fork").Process(target=run_drift, args=(Hanging(),))
    child.start()
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert child.is_alive()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(child.pid or 0, signal.SIGKILL)
    child.join(10)
    assert child.exitcode == -signal.SIGKILL
    killed_at = time.monotonic()

    assert run_drift(real) == [None]  # claimed by the dead run, still inside its window
    assert github_api.pulls == {}
    time.sleep(max(0.0, pending + 0.5 - (time.monotonic() - killed_at)))
    [opened] = run_drift(real)
    assert opened is not None
    assert opened.pull_request == 1
    assert run_drift(real) == [None]  # settled: kept for CLAIM_SECONDS
    assert list(github_api.pulls) == [1]
    assert github_api.attempts("pulls/create") == 1
