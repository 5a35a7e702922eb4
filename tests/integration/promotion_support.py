"""Helpers for the promotion integration tests and bench: push a small image to the real
registry under a content-addressed tag (over the registry HTTP API, so the digest is the
registry's own) and record it as its build would, read digests back, record statuses, and a
GitOps repository with env branches."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import git
import redis
import yaml

from pipeline.adapters import build_records
from pipeline.adapters import git as gitadapter
from pipeline.core import builds, commit_status, ports, promotion, repo
from tests.plugins.builds import VERIFICATION_KEY

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
BASE = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:"


def _request(
    url: str, *, method: str, body: bytes = b"", headers: Mapping[str, str] = {}
) -> urllib.request.Request:
    return urllib.request.Request(url, data=body or None, method=method, headers=dict(headers))


def _upload_blob(host: str, path: str, blob: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with urllib.request.urlopen(
        _request(f"http://{host}/v2/{path}/blobs/uploads/", method="POST")
    ) as answer:
        location = answer.headers["Location"]
    if location.startswith("/"):
        location = f"http://{host}{location}"
    separator = "&" if "?" in location else "?"
    put = _request(
        f"{location}{separator}digest={digest}",
        method="PUT",
        body=blob,
        headers={"Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(put):
        pass
    return digest


def push_image(
    host: str, path: str, tag: str, *, content: bytes, labels: Mapping[str, str] | None = None
) -> str:
    """A one-layer image at http://host/path:tag (its config carrying `labels`); returns the
    manifest digest."""
    layer = content
    layer_digest = _upload_blob(host, path, layer)
    document: dict[str, object] = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }
    if labels is not None:
        document["config"] = {"Labels": dict(labels)}
    config = json.dumps(document).encode()
    config_digest = _upload_blob(host, path, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": config_digest,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer),
                    "digest": layer_digest,
                }
            ],
        }
    ).encode()
    put = _request(
        f"http://{host}/v2/{path}/manifests/{tag}",
        method="PUT",
        body=manifest,
        headers={"Content-Type": MANIFEST_TYPE},
    )
    with urllib.request.urlopen(put) as answer:
        digest = answer.headers["Docker-Content-Digest"]
    assert digest == "sha256:" + hashlib.sha256(manifest).hexdigest()
    return str(digest)


class HttpRegistry:
    """ports.RegistryReader over the registry API (HEAD manifest -> Docker-Content-Digest)."""

    def digest_of(self, reference: str) -> str | None:
        repository, separator, tag = reference.partition("@")
        if not separator:
            repository, _, tag = reference.rpartition(":")
        host, _, path = repository.partition("/")
        head = _request(
            f"http://{host}/v2/{path}/manifests/{tag}",
            method="HEAD",
            headers={"Accept": MANIFEST_TYPE},
        )
        try:
            with urllib.request.urlopen(head) as answer:
                return str(answer.headers["Docker-Content-Digest"])
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def image_of(self, reference: str) -> builds.RegistryImage | None:
        digest = self.digest_of(reference)
        return None if digest is None else builds.RegistryImage(digest, {})


class NoClusters:
    """ports.Clusters for tests whose upstreams have no kube access: connecting is a bug."""

    def connect(self, context: str) -> contextlib.AbstractContextManager[ports.ClusterReader]:
        raise AssertionError(f"no kube context expected, asked for {context!r}")


def push_targets(
    registry_host: str,
    targets: list[promotion.Target],
    *,
    salt: str = "",
    built: ports.BuiltImages | None = None,
) -> dict[str, str]:
    """Push an image for every target's tag, recording each digest in `built` as the build of
    that key would; tag reference -> digest."""
    digests: dict[str, str] = {}
    for target in targets:
        if target.tag_reference in digests:
            continue
        path = target.image_repository.removeprefix(f"{registry_host}/")
        digest = push_image(
            registry_host,
            path,
            target.tag_reference.rpartition(":")[2],
            content=f"{target.build_key}{salt}".encode(),
        )
        digests[target.tag_reference] = digest
        if built is not None:
            built.record_built(builds.BuiltImage(target.build_key, target.image_repository, digest))
    return digests


def recorded_builds(redis_url: str) -> build_records.BuildStore:
    """The build store of a test's Redis: where push_targets records what it pushed, signed
    with the key the workers have."""
    return build_records.BuildStore(
        redis.Redis.from_url(redis_url),
        retention_seconds=3600,
        lock_timeout_seconds=60,
        key=VERIFICATION_KEY.encode(),
    )


@dataclass
class Recorder:
    """StatusReporter that remembers every status (thread-safe)."""

    statuses: list[tuple[str, str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def report(self, sha: str, status: commit_status.Status) -> None:
        assert len(status.description) <= 140
        with self.lock:
            self.statuses.append((sha, status.context, status.state, status.description))

    def last(self, context: str) -> tuple[str, str, str, str]:
        return [s for s in self.statuses if s[1] == context][-1]

    def states(self, context: str) -> list[str]:
        return [s[2] for s in self.statuses if s[1] == context]


class EnvRepo:
    """A work tree with a bare origin, `main` and `env/<environment>` branches."""

    def __init__(self, root: Path) -> None:
        self.registry_prefix = ""
        self.origin = root / "origin.git"
        self.path = root / "work"
        git.Repo.init(self.origin, bare=True, initial_branch="main")
        self.repo = git.Repo.init(self.path, initial_branch="main")
        with self.repo.config_writer() as config:
            config.set_value("user", "name", "Platform Engineer")
            config.set_value("user", "email", "pe@example.invalid")
        self.repo.create_remote("origin", self.origin.as_uri())

    @property
    def url(self) -> str:
        return self.origin.as_uri()

    def write(self, path: str, text: str) -> None:
        target = self.path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def add_image(self, name: str, package: str) -> None:
        self.write(
            f"images/{name}/Containerfile",
            f"FROM {BASE.split('@')[0]}\n"
            f"RUN rpm-ostree install {package} && ostree container commit\n",
        )

    def add_cluster(
        self,
        name: str,
        *,
        environment: str,
        registry: str,
        pools: Mapping[str, str],
        base: str = "a",
        promotes_from: str | None = None,
        soak: str = "0s",
        kube: str | None = None,
        base_image: str | None = None,
    ) -> None:
        document: dict[str, object] = {
            "environment": environment,
            "baseImage": base_image or BASE + base * 64,
            "registry": registry,
            "pools": dict(pools),
            "promotesFrom": promotes_from,
            "soak": soak,
        }
        if kube:
            document["kube"] = {"context": kube}
        self.write(f"clusters/{name}/cluster.yaml", yaml.safe_dump(document, sort_keys=False))

    def commit(self, message: str) -> str:
        self.repo.git.add("-A")
        self.repo.git.commit("-m", message, "--allow-empty")
        return self.repo.head.commit.hexsha

    def push(self, branch: str) -> None:
        self.repo.remote("origin").push(f"refs/heads/{branch}:refs/heads/{branch}").raise_if_error()

    def merge_into(self, source: str, branch: str) -> str:
        """Merge `source` into `branch` (as a pull request merge would) and push it."""
        self.repo.git.fetch("origin")
        names = [h.name for h in self.repo.heads]
        if branch in names:
            self.repo.git.checkout(branch)
            self.repo.git.reset("--hard", f"origin/{branch}")
        else:
            self.repo.git.checkout("-b", branch, f"origin/{source}" if source != "main" else "main")
        remote_source = f"origin/{source}"
        self.repo.git.merge(
            "--no-ff", "--no-edit", "-m", f"Merge {source} into {branch}", remote_source
        )
        self.push(branch)
        sha = self.repo.head.commit.hexsha
        self.repo.git.checkout("main")
        return sha

    def origin_model(self, rev: str) -> repo.Repository:
        with gitadapter.GitRepo.open(self.origin) as reader:
            return reader.load(rev)

    def origin_head(self, branch: str) -> str:
        with gitadapter.GitRepo.open(self.origin) as reader:
            return reader.resolve(f"refs/heads/{branch}")

    def origin_history(self, branch: str) -> list[git.Commit]:
        return list(git.Repo(self.origin).iter_commits(f"refs/heads/{branch}"))


def chained_repo(
    root: Path,
    registry_host: str,
    *,
    kube_context: str,
    soak: str,
    built: ports.BuiltImages,
    extra: Callable[[EnvRepo, str], None] = lambda gitops, prefix: None,
) -> tuple[EnvRepo, dict[str, str]]:
    """A repository whose env branches start before the seed (so merges make merge commits):
    nonprod (worker: firewalld, with kube), nonprod-b (infra: htop, no kube), prod (worker:
    firewalld, promotesFrom nonprod); `extra` may add more before the seed commit. Every target
    is pushed to the registry and recorded in `built`: returns the repository and tag
    reference -> digest."""
    gitops = EnvRepo(root)
    gitops.commit("root")
    for branch in ("env/nonprod", "env/prod"):
        gitops.repo.git.branch(branch)
        gitops.push(branch)
    prefix = f"{registry_host}/t{uuid.uuid4().hex[:12]}"  # the registry is shared
    gitops.registry_prefix = prefix
    gitops.add_image("firewalld", "firewalld")
    gitops.add_image("htop", "htop")
    gitops.add_cluster(
        "nonprod",
        environment="nonprod",
        registry=prefix,
        pools={"worker": "firewalld"},
        kube=kube_context,
    )
    gitops.add_cluster("nonprod-b", environment="nonprod", registry=prefix, pools={"infra": "htop"})
    gitops.add_cluster(
        "prod",
        environment="prod",
        registry=prefix,
        pools={"worker": "firewalld"},
        promotes_from="nonprod",
        soak=soak,
    )
    extra(gitops, prefix)
    gitops.commit("seed")
    gitops.push("main")
    model = gitops.origin_model("refs/heads/main")
    targets = promotion.targets(model, "nonprod") + promotion.targets(model, "prod")
    return gitops, push_targets(registry_host, targets, built=built)
