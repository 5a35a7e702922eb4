"""Issue 13, part 3: what a layered image changes against its base. A real worker builds on the
rpm-carrying stand-in base (adapters/standin.py) and the record gets its package and file
changes, read from both rpm databases with the real rpm; the dashboard's build page shows them
in headless Chromium (a screenshot is kept in the test artifacts); hostile images (a garbage
rpm database, a /usr over the walk's bound, link loops) are read without failing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipeline.adapters import buildah, standin
from pipeline.adapters import image_changes as image_changes_adapter
from pipeline.core import builds, image_changes
from tests import services
from tests.browser import Chromium
from tests.plugins.builds import (
    BaseImage,
    BuildahStorage,
    Worker,
    git_commit_all,
    submit_build,
    write_repository,
)

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("LAYERING_TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts")

DIFFED = """\
ARG BASE_IMAGE=quay.io/fedora/fedora-coreos:stable
FROM ${BASE_IMAGE}
RUN rpm-ostree install tmux && rpm-ostree install vim-minimal && \\
    mkdir -p /etc/motd.d && echo "layered" > /etc/motd.d/layering && \\
    rpm-ostree override remove openssh-server
RUN ostree container commit
"""


def wait_for_changes(worker: Worker, build_id: str, timeout: float = 90) -> dict[str, object]:
    """The record once its deferred analysis saved `changes`."""
    store = worker.env.store()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = store.get(build_id)
        if record is not None and record.changes is not None:
            return record.to_dict()
        time.sleep(0.1)
    raise TimeoutError(f"build {build_id}: no changes after {timeout}s: {store.get(build_id)}")


@pytest.fixture(scope="module")
def gitops(
    tmp_path_factory: pytest.TempPathFactory, base_image: BaseImage, registry: services.Registry
) -> tuple[Path, str]:
    """A repository with the image "diffed" on cluster "dev", and its commit."""
    root = tmp_path_factory.mktemp("gitops-diff")
    write_repository(
        root,
        base=base_image,
        registry=f"{registry.host}/layering",
        images={"diffed": {"Containerfile": DIFFED, "nonce": uuid.uuid4().hex}},
        clusters={"dev": {"pools": {"worker": "diffed"}}},
    )
    return root, git_commit_all(root)


@pytest.fixture(scope="module")
def diffed_build(celery_worker: Worker, gitops: tuple[Path, str]) -> dict[str, object]:
    root, commit = gitops
    build_id = submit_build(
        celery_worker.app,
        celery_worker.settings,
        source=str(root),
        commit_sha=commit,
        image="diffed",
        cluster="dev",
    )
    record = celery_worker.wait_for_build(build_id)
    assert record["state"] == "succeeded", record["error"]
    return wait_for_changes(celery_worker, build_id)


def test_the_record_says_what_the_image_adds_removes_and_replaces(
    diffed_build: dict[str, object], base_image: BaseImage
) -> None:
    changes = image_changes.ImageChanges.from_json(diffed_build["changes"])
    assert changes.error == ""
    assert changes.packages_read
    assert changes.base == base_image.ref
    assert [(c.name, c.new) for c in changes.added.first] == [("tmux", "3.3a-3.fc39.x86_64")]
    assert [(c.name, c.old, c.new) for c in changes.replaced.first] == [
        ("vim-minimal", "2:9.0.1927-1.fc39.x86_64", "2:9.1.0-1.fc39.x86_64")
    ]
    assert [(c.name, c.old) for c in changes.removed.first] == [
        ("openssh-server", "9.3p1-9.fc39.x86_64")
    ]
    trees = {tree.root: tree for tree in changes.trees}
    assert "/etc/motd.d/layering" in trees["/etc"].added.first
    assert "/etc/tmux.conf" in trees["/etc"].added.first
    assert "/etc/ssh/sshd_config" in trees["/etc"].removed.first
    assert "/usr/bin/tmux" in trees["/usr"].added.first
    assert "/usr/bin/vi" in trees["/usr"].changed.first
    summary = image_changes.summary_markdown(changes)
    assert "| `tmux` | added | - | `3.3a-3.fc39.x86_64` |" in summary


def test_the_analysis_leaves_no_working_container(
    diffed_build: dict[str, object], celery_worker: Worker, buildah_storage: BuildahStorage
) -> None:
    listed = subprocess.run(
        [*buildah_storage.argv(), "containers", "--quiet"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert listed.stdout.strip() == ""
    log = celery_worker.env.store().read_log(str(diffed_build["id"]))
    assert any("changes against the base: 1 package added" in line for line in log), log


def test_layering_build_prints_the_changes_before_the_image_id(
    celery_worker: Worker, gitops: tuple[Path, str]
) -> None:
    root, _ = gitops
    env = {**os.environ, **celery_worker.variables}
    argv = [sys.executable, "-m", "pipeline.cli", "build", "diffed", "--cluster", "dev"]
    result = subprocess.run(
        [*argv, "--repo", str(root)], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("changes against the base: 1 package added, 1 removed, 1 replaced")
    assert "  added    tmux 3.3a-3.fc39.x86_64" in lines
    assert "  replaced vim-minimal 2:9.0.1927-1.fc39.x86_64 -> 2:9.1.0-1.fc39.x86_64" in lines
    assert "  added    /etc/motd.d/layering" in lines
    assert lines[-1].startswith("sha256:")  # the local image id stays last


@pytest.fixture
def served(tmp_path: Path, celery_worker: Worker) -> Iterator[str]:
    """`layering serve` on the worker's Redis: the dashboard the build pages come from."""
    port = services.free_port()
    env = {
        **os.environ,
        **celery_worker.variables,
        "LAYERING_WEBHOOK_SECRET": "image-changes-webhook-secret",
        "LAYERING_GITHUB_REPOSITORY": "acme/layers",
    }
    layering = str(Path(sys.executable).with_name("layering"))
    process = services.start(
        [layering, "serve", "--port", str(port)], log=tmp_path / "serve.log", env=env
    )
    try:
        services.wait_for_port(port, process=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        services.stop_process(process)


def test_the_build_page_shows_the_changes_in_chromium(
    diffed_build: dict[str, object], celery_worker: Worker, served: str, tmp_path: Path
) -> None:
    store = celery_worker.env.store()
    hostile = builds.BuildRecord(
        id=f"hostile-{uuid.uuid4().hex[:8]}",
        image="diffed",
        cluster="dev",
        state=builds.BuildState.SUCCEEDED,
        changes=image_changes.ImageChanges(
            base="registry/os@sha256:" + "a" * 64,
            trees=(
                image_changes.TreeChanges(
                    "/etc", added=image_changes.PathList(1, ("/etc/<script>alert(1)</script>",))
                ),
            ),
        ).to_json(),
    )
    store.save(hostile)
    document = httpx.get(f"{served}/api/builds/{diffed_build['id']}").json()
    assert document["changes"] == diffed_build["changes"]
    with Chromium.start(tmp_path) as browser:
        page = browser.page()
        page.navigate(f"{served}/builds/{diffed_build['id']}")
        page.wait_for("document.querySelectorAll('tr.package').length === 3")
        rows = page.evaluate(
            "[...document.querySelectorAll('tr.package')].map(r => r.innerText.split('\\t'))"
        )
        assert ["tmux", "added", "-", "3.3a-3.fc39.x86_64"] in rows
        assert ["vim-minimal", "replaced", "2:9.0.1927-1.fc39.x86_64", "2:9.1.0-1.fc39.x86_64"] in (
            rows
        )
        text = page.evaluate("document.getElementById('changes').innerText")
        assert "/etc/motd.d/layering" in text
        assert "under /usr" in text
        page.screenshot(ARTIFACTS / "build-changes.png")

        page.navigate(f"{served}/builds/{hostile.id}")
        page.wait_for("document.getElementById('changes') !== null")
        assert page.evaluate("document.querySelectorAll('#changes script').length") == 0
        assert "<script>alert(1)</script>" in page.evaluate(
            "document.getElementById('changes').innerText"
        )


# -- hostile images, read directly from the session's storage --------------------------------


def commit_image(storage: BuildahStorage, rootfs: Path, name: str) -> str:
    """A from-scratch image of `rootfs` in `storage`, named localhost/<name>."""
    argv = storage.argv()
    container = subprocess.run(
        [*argv, "from", "--quiet", "scratch"], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run([*argv, "copy", "--quiet", container, f"{rootfs}/", "/"], check=True)
    reference = f"localhost/{name}:latest"
    subprocess.run([*argv, "commit", "--quiet", "--rm", container, reference], check=True)
    return reference


def spec_of(target: str, base: str) -> builds.BuildSpec:
    return builds.BuildSpec(
        image="hostile",
        cluster="dev",
        build_key="k",
        target=target,
        base=base,
        containerfile="",
        context=Path("."),
        build_args={},
        labels={},
    )


@pytest.fixture(scope="module")
def stand_in_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return standin.make_rootfs(tmp_path_factory.mktemp("stand-in") / "rootfs")


@pytest.fixture(scope="module")
def reader(
    buildah_storage: BuildahStorage, base_image: BaseImage
) -> image_changes_adapter.ImageReader:
    config = buildah.BuildahConfig(
        storage_driver="vfs", root=buildah_storage.root, runroot=buildah_storage.runroot
    )
    return image_changes_adapter.ImageReader(config, max_entries=2000)


LOCAL_BASE = "localhost/fcos-stand-in:latest"  # what standin.build committed before pushing


def test_a_garbage_rpm_database_is_a_note_not_a_failure(
    reader: image_changes_adapter.ImageReader,
    buildah_storage: BuildahStorage,
    stand_in_root: Path,
    tmp_path: Path,
) -> None:
    rootfs = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", f"{stand_in_root}/.", str(rootfs)], check=True)
    (rootfs / "usr/lib/sysimage/rpm/rpmdb.sqlite").write_bytes(os.urandom(64 * 1024))
    (rootfs / "etc/garbage-marker").write_text("x\n")
    target = commit_image(buildah_storage, rootfs, "hostile-garbage-rpmdb")
    changes = reader.changes(spec_of(target, LOCAL_BASE))
    assert changes.error == ""
    assert not changes.packages_read
    assert any(
        "image: the rpm database /usr/lib/sysimage/rpm could not be read" in n
        for n in changes.notes
    ), changes.notes
    etc = next(tree for tree in changes.trees if tree.root == "/etc")
    assert "/etc/garbage-marker" in etc.added.first


def test_a_huge_usr_is_compared_up_to_the_bound(
    reader: image_changes_adapter.ImageReader,
    buildah_storage: BuildahStorage,
    stand_in_root: Path,
    tmp_path: Path,
) -> None:
    rootfs = tmp_path / "rootfs"
    subprocess.run(["cp", "-a", f"{stand_in_root}/.", str(rootfs)], check=True)
    many = rootfs / "usr/share/zz-many"
    many.mkdir(parents=True)
    for number in range(3000):
        (many / f"f{number:05d}").write_text("")
    (rootfs / "usr/bin/aa-early").write_text("#!/bin/sh\n")
    target = commit_image(buildah_storage, rootfs, "hostile-huge-usr")
    changes = reader.changes(spec_of(target, LOCAL_BASE))
    usr = next(tree for tree in changes.trees if tree.root == "/usr")
    assert "/usr/bin/aa-early" in usr.added.first
    assert usr.added.count < 3000
    assert any("/usr holds more entries than the walk reads" in n for n in changes.notes)
    assert changes.packages_read
    assert changes.added.count == 0


def test_link_loops_and_links_out_of_the_image_are_never_followed(
    reader: image_changes_adapter.ImageReader, buildah_storage: BuildahStorage, tmp_path: Path
) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "usr/lib/sysimage").mkdir(parents=True)
    (rootfs / "usr/share").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    (rootfs / "usr/lib/sysimage/rpm").symlink_to("/usr/lib/sysimage/rpm")  # itself
    (rootfs / "usr/share/rpm").symlink_to("/var/lib/rpm")
    (rootfs / "var/lib").mkdir(parents=True)
    (rootfs / "var/lib/rpm").symlink_to("/usr/share/rpm")  # a loop of two
    (rootfs / "etc/host-passwd").symlink_to("/etc/passwd")
    (rootfs / "usr/loop").symlink_to("loop")
    target = commit_image(buildah_storage, rootfs, "hostile-links")
    changes = reader.changes(spec_of(target, LOCAL_BASE))
    assert changes.error == ""
    assert any("image: no rpm database" in n for n in changes.notes), changes.notes
    etc = next(tree for tree in changes.trees if tree.root == "/etc")
    assert "/etc/host-passwd" in etc.added.first


def test_an_image_not_in_storage_says_why(reader: image_changes_adapter.ImageReader) -> None:
    changes = reader.changes(spec_of("localhost/never-built:latest", LOCAL_BASE))
    assert changes.error.startswith("buildah from failed")
    assert "could not be read" in image_changes.summary_markdown(changes)
