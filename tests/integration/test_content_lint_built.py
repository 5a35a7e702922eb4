"""Issue 15: the content lint's reader (adapters/layer_content.py) on images really built with
buildah on the rpm-carrying stand-in base, read from the storage's own layer metadata. A clean
image has no finding; one bad image fires every content rule LAY101..LAY113, and its removed
files and directories removed and made again read as whiteouts (opaque on overlay); built with
the overlay driver it gives the same root filesystem, packages and findings as with vfs.
`pulled` brings an image from the registry and removes only what it brought. Three builds."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pipeline.adapters import buildah, layer_content
from pipeline.core import content_lint, content_rules
from pipeline.core.errors import PermanentError
from pipeline.core.file_index import FileEntry
from tests import services
from tests.plugins.builds import BaseImage, BuildahStorage

pytestmark = pytest.mark.integration

LOCAL_BASE = "localhost/fcos-stand-in:latest"  # what standin.build committed before pushing
SECOND_KERNEL = "6.9.9-100.fc40"
BASE_KERNEL = "6.5.6-300.fc39"
CLEAN = """\
FROM {base}
RUN mkdir -p /usr/share/clean /etc/profile.d && echo data > /usr/share/clean/data && \\
    echo 'alias ll="ls -l"' > /etc/profile.d/ll.sh
"""
# every condition of LAY101..LAY113 at once (none hides another), and whiteouts
BAD = f"""\
FROM {{base}}
COPY empty /etc/hostname
RUN set -e; \\
    mkdir -p /var/lib/x /usr/lib/bootc/kargs.d /usr/etc /etc/yum.repos.d /data /boot \\
        /usr/lib/modules/{SECOND_KERNEL}; \\
    echo state > /var/lib/x/state; echo log > /var/log/y; echo z > /tmp/z; echo k > /boot/k; \\
    touch "/usr/share/$(printf 'bad-\\377-name')"; \\
    printf '[rhel-9-baseos]\\nenabled=1\\n' > /etc/yum.repos.d/redhat.repo; \\
    echo d > /data/d; printf 'kargs = ["nosmt"]\\n' > /usr/lib/bootc/kargs.d/x.toml; \\
    echo e > /usr/etc/x; echo kernel > /usr/lib/modules/{SECOND_KERNEL}/vmlinuz; \\
    /usr/bin/rpm --dbpath /usr/lib/sysimage/rpm -e --nodeps openssh-server; \\
    rm /var/run; mkdir /var/run; \\
    rm /etc/os-release; rm -rf /etc/ssh; mkdir /etc/ssh; echo new > /etc/ssh/new
"""


def build(storage: BuildahStorage, containerfile: str, context: Path, tag: str) -> str:
    """`buildah build` of `containerfile` in `storage`; returns the image id."""
    context.mkdir(parents=True, exist_ok=True)
    (context / "Containerfile").write_text(containerfile)
    (context / "empty").write_text("")
    iidfile = context / "iid"
    built = subprocess.run(
        [
            *storage.argv(),
            "build",
            "--quiet",
            "--isolation",
            "chroot",
            "--pull=never",
            "--iidfile",
            str(iidfile),
            "--tag",
            tag,
            str(context),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-3000:] + built.stdout[-3000:]
    return iidfile.read_text().strip().removeprefix("sha256:")


def buildah_json(storage: BuildahStorage) -> list[dict[str, Any]]:
    images = storage.root / f"{storage.driver}-images" / "images.json"
    return list(json.loads(images.read_text())) if images.exists() else []


@pytest.fixture(scope="module")
def config(buildah_storage: BuildahStorage, base_image: BaseImage) -> buildah.BuildahConfig:
    return buildah.BuildahConfig(
        storage_driver="vfs", root=buildah_storage.root, runroot=buildah_storage.runroot
    )


@pytest.fixture(scope="module")
def clean_image(
    buildah_storage: BuildahStorage, base_image: BaseImage, tmp_path_factory: pytest.TempPathFactory
) -> str:
    context = tmp_path_factory.mktemp("clean")
    return build(buildah_storage, CLEAN.format(base=LOCAL_BASE), context, "localhost/clean:1")


@pytest.fixture(scope="module")
def bad_image(
    buildah_storage: BuildahStorage, base_image: BaseImage, tmp_path_factory: pytest.TempPathFactory
) -> str:
    context = tmp_path_factory.mktemp("bad")
    return build(buildah_storage, BAD.format(base=LOCAL_BASE), context, "localhost/bad:1")


def test_a_clean_image_has_no_content_finding(
    config: buildah.BuildahConfig, clean_image: str
) -> None:
    reader = layer_content.LayerReader(config)
    content = reader.content(clean_image, base=LOCAL_BASE)
    assert content_rules.findings(content) == []
    added = content_lint.added(content)
    assert {"/usr/share/clean/data", "/etc/profile.d/ll.sh"} <= set(added)
    assert content.built_packages is None  # the rpm database is untouched: nothing to read
    assert content.base["/var/run"].target == "../run"
    assert content.base["/usr/lib/sysimage/rpm/rpmdb.sqlite"].kind == "file"

    started = time.perf_counter()
    again = reader.content(f"sha256:{clean_image}", base=LOCAL_BASE)
    warm = time.perf_counter() - started
    started = time.perf_counter()
    content_rules.findings(again)
    rules = time.perf_counter() - started
    print(
        f"\nwarm content() on the stand-in ({len(again.base)} base entries, "
        f"{len(again.changes)} changes): {warm * 1000:.1f} ms; findings(): {rules * 1000:.1f} ms"
    )
    assert again == content


def test_every_content_rule_fires_on_the_bad_image(
    bad_content: content_lint.ImageContent,
) -> None:
    content = bad_content
    found = content_rules.findings(content)
    assert {f.id for f in found} == set(content_rules.CONTENT_RULE_IDS), found
    by_rule = {f.id: f for f in found}
    assert by_rule["LAY101"].path == "/var/run"
    assert "is a dir" in by_rule["LAY101"].message
    assert by_rule["LAY102"].path == "/usr/etc"
    assert SECOND_KERNEL in by_rule["LAY103"].message
    assert BASE_KERNEL in by_rule["LAY104"].message
    assert SECOND_KERNEL in by_rule["LAY104"].message
    assert "/usr/lib/bootc/kargs.d/x.toml" in by_rule["LAY105"].message
    assert "/var/lib/x/state" in by_rule["LAY106"].message
    assert {f.path for f in found if f.id == "LAY107"} == {"/var/log", "/tmp"}
    assert by_rule["LAY108"].path == "/etc/hostname"
    assert by_rule["LAY109"].path == "/boot"
    assert "/usr/share/bad-\\xff-name" in by_rule["LAY110"].message
    assert content_lint.not_utf8(content) == ["/usr/share/bad-\\xff-name"]
    assert "/etc/yum.repos.d/redhat.repo" in by_rule["LAY111"].message
    assert "/data" in {f.path for f in found if f.id == "LAY112"}
    assert "openssh-server" in by_rule["LAY113"].message
    assert content.base_packages is not None
    assert content.built_packages is not None
    assert {p.name for p in content.base_packages} - {p.name for p in content.built_packages} == {
        "openssh-server"
    }
    assert all(f.line is None for f in found)


@pytest.fixture(scope="module")
def bad_content(config: buildah.BuildahConfig, bad_image: str) -> content_lint.ImageContent:
    return layer_content.LayerReader(config).content("localhost/bad:1", base=LOCAL_BASE)


@pytest.fixture(scope="module")
def overlay_bad(
    base_image: BaseImage,
    containers_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[content_lint.ImageContent, list[dict[str, Any]]]]:
    """The bad image built with the overlay driver on a private root, its base pulled there
    from the registry by digest (`pulled`); with what the storage held after `pulled` ended."""
    directory = tmp_path_factory.mktemp("overlay-content")
    storage = BuildahStorage(directory / "root", directory / "run", "overlay")
    config = buildah.BuildahConfig(
        storage_driver="overlay", root=storage.root, runroot=storage.runroot
    )
    try:
        with layer_content.pulled(config, base_image.ref) as base_id:
            image = build(storage, BAD.format(base=base_image.ref), directory / "context", "b:1")
            content = layer_content.LayerReader(config).content(image, base=base_image.ref)
            assert layer_content.LayerReader(config).content(image, base=base_id) == content
            subprocess.run([*storage.argv(), "rmi", image], check=True, capture_output=True)
        yield content, buildah_json(storage)
    finally:
        services.unmount_under(directory)
        shutil.rmtree(directory, ignore_errors=True)


def test_removed_files_and_a_directory_made_again_read_as_whiteouts(
    bad_content: content_lint.ImageContent,
) -> None:
    vfs_whiteouts = bad_content
    removed = {c.path for c in vfs_whiteouts.changes if c.entry is None}
    assert "/etc/os-release" in removed
    final = content_lint.merged(vfs_whiteouts)
    assert "/etc/os-release" not in final
    assert "/etc/ssh/new" in final
    assert [p for p in final if p.startswith("/etc/ssh/")] == ["/etc/ssh/new"]
    assert any(p.startswith("/etc/ssh/") for p in vfs_whiteouts.base)
    assert vfs_whiteouts.built_packages is not None
    assert "openssh-server" not in {p.name for p in vfs_whiteouts.built_packages}


def without_times(tree: dict[str, FileEntry]) -> dict[str, FileEntry]:
    return {path: replace(entry, mtime=0) for path, entry in tree.items()}


def test_overlay_reads_as_vfs_and_marks_the_directories_made_again_opaque(
    bad_content: content_lint.ImageContent,
    overlay_bad: tuple[content_lint.ImageContent, list[dict[str, Any]]],
) -> None:
    vfs_whiteouts = bad_content
    overlay, _ = overlay_bad
    assert [c.path for c in overlay.changes if c.opaque] == ["/etc/ssh", "/var/run"]
    assert without_times(dict(overlay.base)) == without_times(dict(vfs_whiteouts.base))
    assert without_times(content_lint.merged(overlay)) == without_times(
        content_lint.merged(vfs_whiteouts)
    )
    assert overlay.base_packages == vfs_whiteouts.base_packages
    assert overlay.built_packages == vfs_whiteouts.built_packages
    assert content_rules.findings(overlay) == content_rules.findings(vfs_whiteouts)


def test_pulled_removes_only_what_it_brought(
    overlay_bad: tuple[content_lint.ImageContent, list[dict[str, Any]]],
    config: buildah.BuildahConfig,
    buildah_storage: BuildahStorage,
    base_image: BaseImage,
) -> None:
    _, left = overlay_bad
    assert left == []  # the base pulled into an empty storage is gone again
    local = next(i for i in buildah_json(buildah_storage) if LOCAL_BASE in i.get("names", []))
    with layer_content.pulled(config, base_image.ref) as image_id:
        assert image_id == local["id"]  # the same image, stored once
    after = next(i for i in buildah_json(buildah_storage) if i["id"] == image_id)
    # a name the pull added is removed again; one the storage had (a worker's build in the
    # same session may have pulled the base by that name) stays
    assert sorted(after["names"]) == sorted(local["names"])


def test_what_cannot_be_read_says_why(
    config: buildah.BuildahConfig,
    clean_image: str,
    tmp_path: Path,
    base_image: BaseImage,
) -> None:
    with pytest.raises(PermanentError, match=r"is not built on localhost/clean:1: the base's top"):
        layer_content.LayerReader(config).content(LOCAL_BASE, base="localhost/clean:1")
    with pytest.raises(PermanentError, match=r"localhost/never-built:1 is not in the local"):
        layer_content.LayerReader(config).content("localhost/never-built:1", base=LOCAL_BASE)
    bounded = layer_content.LayerReader(config, max_entries=3)
    with pytest.raises(PermanentError, match=r"layer [0-9a-f]{64} holds more than 3 entries"):
        bounded.content(clean_image, base=LOCAL_BASE)
    empty = replace(config, root=tmp_path)
    with pytest.raises(PermanentError) as raised:
        layer_content.LayerReader(empty).content(clean_image, base=LOCAL_BASE)
    assert str(tmp_path / "vfs-images" / "images.json") in str(raised.value)
    assert "set LAYERING_CONTENT_LINT=false to push without the content lint" in str(raised.value)
    untagged = layer_content.pulled(config, "localhost/clean")
    with pytest.raises(PermanentError, match="name the image by tag or digest"), untagged:
        pass
    missing = layer_content.pulled(config, f"{base_image.repository}:no-such-tag")
    with pytest.raises(PermanentError, match="is not in its registry"), missing:
        pass
