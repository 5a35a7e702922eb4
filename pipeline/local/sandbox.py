"""`layering up`'s local GitOps sandbox, made when no LAYERING_REPO_URL is set: a bare
repository seeded from this project's images/ and clusters/ (rebased onto a busybox stand-in
base image pushed to the local registry, so builds really run here) with env/nonprod and
env/prod at the seed commit; the stand-in base image itself (built once, reused while the
registry holds it); the registry's configuration and the registries.conf marking it insecure;
and the webhook secret. Does file, process (git, buildah), Git and network I/O."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline.adapters import standin
from pipeline.core.errors import InputError, PipelineError
from pipeline.local import keys, workdir

# The project's example images that build on the busybox stand-in (their RUN steps only call
# rpm-ostree/ostree, which the stand-in shims); the others need real RHEL content or network.
SANDBOX_POOLS = {"debug": "htop", "shell": "fish"}
SANDBOX_SOAK = {"prod": "2m"}  # prod soaks for minutes here, not a day
BRANCHES = ("main", "env/nonprod", "env/prod")
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "layering up",
    "GIT_AUTHOR_EMAIL": "layering-up@localhost",
    "GIT_COMMITTER_NAME": "layering up",
    "GIT_COMMITTER_EMAIL": "layering-up@localhost",
}


def webhook_secret(path: Path) -> str:
    """The secret in `path`, made (mode 0600) on first use."""
    return keys.secret(path)


def registry_config(*, host: str, data: Path) -> str:
    """docker-registry configuration: this address only, filesystem storage, deletes on."""
    return (
        "version: 0.1\n"
        "log: {level: warn}\n"
        "storage:\n"
        f"  filesystem: {{rootdirectory: {json.dumps(str(data))}}}\n"
        "  delete: {enabled: true}\n"
        f"http: {{addr: {json.dumps(host)}}}\n"
    )


def registries_conf(host: str) -> str:
    """containers-registries.conf(5) marking the plain-HTTP local registry insecure."""
    return f'[[registry]]\nlocation = "{host}"\ninsecure = true\n'


# -- the sandbox repository -----------------------------------------------------------------


def sandbox_cluster(
    document: Mapping[str, Any], *, cluster: str, base_ref: str, registry: str, images: set[str]
) -> dict[str, Any]:
    """cluster.yaml rebased onto the stand-in and the local registry: pools limited to the
    images that build on the stand-in, no live cluster access, a short prod soak."""
    rewritten = dict(document)
    rewritten["baseImage"] = base_ref
    rewritten["registry"] = registry
    rewritten["pools"] = {pool: image for pool, image in SANDBOX_POOLS.items() if image in images}
    rewritten.pop("kube", None)
    environment = str(document.get("environment", cluster))
    if environment in SANDBOX_SOAK:
        rewritten["soak"] = SANDBOX_SOAK[environment]
    return rewritten


_CLUSTER_HEADER = """\
# Sandbox copy made by `layering up`: baseImage is the local busybox stand-in, images go to the
# local registry, and the pools hold the example images whose builds run on the stand-in
# (the others need real RHEL content). Edit freely: this repository is yours.
"""


def write_seed(source: Path, tree: Path, *, base_ref: str, registry: str) -> None:
    """Copy images/ and clusters/ (without machineconfigs/) from `source` into `tree`,
    rewriting every cluster.yaml with sandbox_cluster."""
    for top in ("images", "clusters"):
        if not (source / top).is_dir():
            raise InputError(f"{source / top}: missing; pass --seed with a tree holding {top}/")
    shutil.copytree(source / "images", tree / "images", symlinks=False)
    images = {path.name for path in (tree / "images").iterdir() if path.is_dir()}
    for cluster_file in sorted((source / "clusters").glob("*/cluster.yaml")):
        document = yaml.safe_load(cluster_file.read_text()) or {}
        name = cluster_file.parent.name
        rewritten = sandbox_cluster(
            document, cluster=name, base_ref=base_ref, registry=registry, images=images
        )
        target = tree / "clusters" / name / "cluster.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(_CLUSTER_HEADER + yaml.safe_dump(rewritten, sort_keys=False))
    (tree / "README.md").write_text(
        "# Layered images (sandbox)\n\nMade by `layering up`. Change `images/<image>/Containerfile`"
        " and push to build; merge `main` into `env/nonprod` and push to promote.\n"
    )


def _git(*args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    git = shutil.which("git")
    if git is None:
        raise InputError("git not found: install the Debian package git")
    result = subprocess.run(
        [git, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **GIT_IDENTITY, **(env or {})},
    )
    if result.returncode != 0:
        raise PipelineError(f"git {' '.join(args[:3])} failed: {result.stderr.strip()[-1500:]}")
    return result.stdout


def create_repository(bare: Path, *, seed: Path, base_ref: str, registry: str) -> Path:
    """The bare sandbox repository with env/nonprod and env/prod at the seed commit, and a
    checkout (returned) whose main is not pushed yet: pushing it once the services run makes
    the first build of every image."""
    staging = bare.with_name(f".{bare.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    _git("init", "--quiet", "--bare", "--initial-branch=main", str(staging))
    tree = Path(tempfile.mkdtemp(prefix="seed-", dir=bare.parent))
    _git("init", "--quiet", "--initial-branch=main", str(tree))
    write_seed(seed, tree, base_ref=base_ref, registry=registry)
    _git("add", "--all", cwd=tree)
    _git("commit", "--quiet", "-m", "Seed from coreos-layering-pipeline examples", cwd=tree)
    _git("remote", "add", "origin", str(staging), cwd=tree)
    for branch in BRANCHES[1:]:
        _git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=tree)
    staging.rename(bare)
    _git("remote", "set-url", "origin", str(bare), cwd=tree)
    return tree


def push_seed(tree: Path) -> None:
    _git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=tree)
    shutil.rmtree(tree, ignore_errors=True)


# -- the stand-in base image ----------------------------------------------------------------


def manifest_exists(registry_host: str, repository: str, digest: str) -> bool:
    request = urllib.request.Request(
        f"http://{registry_host}/v2/{repository}/manifests/{digest}",
        method="HEAD",
        headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json, "
            "application/vnd.docker.distribution.manifest.v2+json"
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def buildah_argv(layout: workdir.Layout, driver: str = "vfs") -> list[str]:
    """buildah on `up`'s own storage root, with the driver the workers use (services.py)."""
    buildah = shutil.which("buildah")
    if buildah is None:
        raise InputError("buildah not found: install the Debian package buildah")
    return [
        buildah,
        "--root",
        str(layout.buildah / "root"),
        "--runroot",
        str(layout.buildah / "run"),
        "--storage-driver",
        driver,
    ]


def base_image(
    layout: workdir.Layout,
    state: dict[str, Any],
    registry_host: str,
    env: Mapping[str, str],
    say: workdir.Say,
    *,
    driver: str = "vfs",
) -> standin.BaseImage:
    """The stand-in base image in the local registry: the one `state` remembers while the
    registry still holds it, else built and pushed now (and remembered in up.json)."""
    saved = state.get("base_image") or {}
    repository = f"{registry_host}/{standin.REPOSITORY}"
    digest = str(saved.get("digest", ""))
    if saved.get("repository") == repository and manifest_exists(
        registry_host, standin.REPOSITORY, digest
    ):
        say(f"stand-in base image {repository}@{digest[:19]}… (reused)")
        return standin.BaseImage(repository, digest)
    started = time.monotonic()
    image = standin.build(
        buildah=buildah_argv(layout, driver),
        repository=repository,
        workdir=layout.root / "standin",
        env=env,
    )
    state["base_image"] = {"repository": image.repository, "digest": image.digest}
    workdir.write_json(layout.state_file, state)
    say(f"stand-in base image {image.ref} built and pushed {workdir.since(started)}")
    return image
