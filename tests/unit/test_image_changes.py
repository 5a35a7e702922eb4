"""The package diff's pure core: compare, its JSON form checked on the way back from Redis, the
rpm query parsed, the walk's bound, and the Markdown a check run shows."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pipeline.core import file_index, image_changes, rpm_packages
from pipeline.core.file_index import FileEntry, FileIndex

BASE_QUERY = (
    "bash\t5.2.15-5.fc39\tx86_64\n"
    "vim-minimal\t2:9.0.1927-1.fc39\tx86_64\n"
    "openssh-server\t9.3p1-9.fc39\tx86_64\n"
)
BUILT_QUERY = (
    "bash\t5.2.15-5.fc39\tx86_64\nvim-minimal\t2:9.1.0-1.fc39\tx86_64\ntmux\t3.3a-3.fc39\tx86_64\n"
)


def changes() -> image_changes.ImageChanges:
    return image_changes.compare(
        base_packages=rpm_packages.parse_query(BASE_QUERY),
        built_packages=rpm_packages.parse_query(BUILT_QUERY),
        base_files=[
            FileIndex(
                "/etc",
                {
                    "/etc": FileEntry("dir", 0o755),
                    "/etc/passwd": FileEntry("file", 0o644, 10, 1),
                    "/etc/ssh/sshd_config": FileEntry("file", 0o600, 5, 1),
                },
            ),
            FileIndex("/usr", {"/usr/bin/vi": FileEntry("file", 0o755, 10, 1)}),
        ],
        built_files=[
            FileIndex(
                "/etc",
                {
                    "/etc": FileEntry("dir", 0o755, 4096, 99),  # a dir's mtime moves: no change
                    "/etc/passwd": FileEntry("file", 0o644, 10, 1),
                    "/etc/motd": FileEntry("file", 0o644, 6, 2),
                    "/etc/motd.d": FileEntry("dir", 0o755),  # a new dir is not a file
                },
            ),
            FileIndex(
                "/usr",
                {
                    "/usr/bin/vi": FileEntry("file", 0o755, 12, 2),
                    "/usr/bin/tmux": FileEntry("file", 0o755, 3, 2),
                    "/usr/bin/view": FileEntry("link", 0o777, target="vi"),
                },
            ),
        ],
        base="quay.io/fcos@sha256:" + "a" * 64,
    )


def test_compare_names_packages_added_removed_and_replaced_with_versions() -> None:
    found = changes()
    assert found.packages_read
    assert found.added == image_changes.PackageList(
        1, (image_changes.PackageChange("tmux", new="3.3a-3.fc39.x86_64"),)
    )
    assert found.removed.first == (
        image_changes.PackageChange("openssh-server", old="9.3p1-9.fc39.x86_64"),
    )
    assert found.replaced.first == (
        image_changes.PackageChange(
            "vim-minimal", "2:9.0.1927-1.fc39.x86_64", "2:9.1.0-1.fc39.x86_64"
        ),
    )


def test_compare_lists_files_added_changed_and_removed_per_tree() -> None:
    etc, usr = changes().trees
    assert (etc.root, etc.added.first, etc.changed.first) == ("/etc", ("/etc/motd",), ())
    assert etc.removed.first == ("/etc/ssh/sshd_config",)
    assert usr.added == image_changes.PathList(2, ("/usr/bin/tmux", "/usr/bin/view"))
    assert usr.changed.first == ("/usr/bin/vi",)


def test_first_paths_are_sorted_and_cut_but_counted() -> None:
    built = FileIndex("/usr", {f"/usr/f{n:03d}": FileEntry("file") for n in range(50, 0, -1)})
    found = image_changes.compare(
        base_packages=[], built_packages=[], base_files=[], built_files=[built], first=3
    )
    assert found.trees[0].added == image_changes.PathList(
        50, ("/usr/f001", "/usr/f002", "/usr/f003")
    )


def test_a_cut_walk_is_compared_only_up_to_where_it_stopped() -> None:
    base = FileIndex("/usr", {"/usr/a": FileEntry("file"), "/usr/z": FileEntry("file")})
    built = FileIndex(
        "/usr",
        {"/usr/a": FileEntry("file"), "/usr/b": FileEntry("file"), "/usr/c/d": FileEntry("file")},
        cut_after="/usr/c/d",
    )
    found = image_changes.compare(
        base_packages=[], built_packages=[], base_files=[base], built_files=[built]
    )
    # /usr/z lies beyond the cut: unknown, not removed
    assert found.trees[0].added.first == ("/usr/b", "/usr/c/d")
    assert found.trees[0].removed.count == 0
    assert any("compared up to /usr/c/d" in note for note in found.notes)


@pytest.mark.parametrize(
    ("paths", "ordered"),
    [
        (["/usr/a.b", "/usr/a/b"], ["/usr/a/b", "/usr/a.b"]),  # a directory's entries first
        (["/usr/b", "/usr/a/z/z"], ["/usr/a/z/z", "/usr/b"]),
    ],
)
def test_the_walk_order_is_by_components(paths: list[str], ordered: list[str]) -> None:
    assert sorted(paths, key=file_index.key) == ordered


def test_no_rpm_database_means_packages_not_read() -> None:
    found = image_changes.compare(
        base_packages=None,
        built_packages=[rpm_packages.Package("tmux", "3.3a-3", "x86_64")],
        base_files=[],
        built_files=[],
        notes=["base: no rpm database"],
    )
    assert not found.packages_read
    assert found.added.count == 0
    assert "no rpm database" in image_changes.summary_markdown(found)


@pytest.mark.parametrize(
    "line",
    [
        "tmux 3.3a-3 x86_64",  # not tab-separated
        "tmux\t3.3a\tx86_64",  # no release
        "<b>\t1-1\tx86_64",  # not an rpm name
        "tmux\t1-1\tx86_64\textra",
        "error: rpmdb open failed",
    ],
)
def test_parse_query_refuses_what_is_not_a_package(line: str) -> None:
    with pytest.raises(rpm_packages.NotAPackage, match="line 1"):
        rpm_packages.parse_query(line + "\n")


def test_parse_query_keeps_epochs() -> None:
    assert rpm_packages.parse_query("vim-minimal\t2:9.1.0-1.fc39\tx86_64\n") == [
        rpm_packages.Package("vim-minimal", "2:9.1.0-1.fc39", "x86_64")
    ]


def test_json_round_trip() -> None:
    found = changes()
    assert image_changes.ImageChanges.from_json(found.to_json()) == found
    failed = image_changes.failed("buildah from failed: no image", base="b")
    assert image_changes.ImageChanges.from_json(failed.to_json()) == failed


def _broken(path: str, value: Any) -> dict[str, Any]:
    document = copy.deepcopy(changes().to_json())
    *parents, last = path.split(".")
    target: Any = document
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is KeyError:
        del target[last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return document


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("version", 2, "changes.version"),
        ("packages_read", "yes", "changes.packages_read"),
        ("base", 7, "changes.base"),
        ("error", "x\n<script>", "changes.error"),
        ("notes", ["n"] * 11, "changes.notes"),
        ("packages.added.count", -1, "changes.packages.added.count"),
        ("packages.added.count", 0, "changes.packages.added.count"),  # fewer than listed
        ("packages.added.first.0.name", "<img src=x>", "changes.packages.added.first[0].name"),
        ("packages.replaced.first.0.new", "9.1|x", "changes.packages.replaced.first[0].new"),
        ("packages.removed", KeyError, "changes.packages.removed"),
        ("files.0.root", "/var", "changes.files[0].root"),
        ("files.1.added.first", ["/usr/x"] * 21, "changes.files[1].added.first"),
        ("files.1.added.count", True, "changes.files[1].added.count"),
        ("files", [{}] * 3, "changes.files"),
    ],
)
def test_from_json_names_the_bad_field(path: str, value: Any, field: str) -> None:
    with pytest.raises(image_changes.InvalidChanges) as raised:
        image_changes.ImageChanges.from_json(_broken(path, value))
    assert str(raised.value).startswith(field)


@pytest.mark.parametrize("document", [None, [], "changes", {"version": 1}])
def test_from_json_refuses_what_is_not_a_document(document: object) -> None:
    with pytest.raises(image_changes.InvalidChanges):
        image_changes.ImageChanges.from_json(document)


def test_summary_markdown_is_a_table_and_path_lists() -> None:
    summary = image_changes.summary_markdown(changes())
    assert summary.startswith("### What this image changes\n")
    assert "1 package added, 1 removed, 1 replaced; 3 files added, 1 changed, 1 removed" in summary
    assert "| `tmux` | added | - | `3.3a-3.fc39.x86_64` |" in summary
    assert (
        "| `vim-minimal` | replaced | `2:9.0.1927-1.fc39.x86_64` | `2:9.1.0-1.fc39.x86_64` |"
        in summary
    )
    assert "**1 file added under `/etc`**\n- `/etc/motd`" in summary


def test_summary_markdown_keeps_hostile_paths_in_code_spans() -> None:
    built = FileIndex(
        "/etc",
        {
            "/etc/[x](https://evil.example)": FileEntry("file"),
            "/etc/@admins`ping`": FileEntry("file"),
            "/etc/new\nline": FileEntry("file"),
        },
    )
    found = image_changes.compare(
        base_packages=[], built_packages=[], base_files=[], built_files=[built]
    )
    summary = image_changes.summary_markdown(found)
    assert "- `/etc/[x](https://evil.example)`" in summary
    assert "- `` /etc/@admins`ping` ``" in summary
    assert "- `/etc/new\\x0aline`" in summary


def test_summary_markdown_of_a_failed_analysis_says_why() -> None:
    summary = image_changes.summary_markdown(image_changes.failed("rpm: boom"))
    assert "The changes could not be read: `rpm: boom`" in summary


@pytest.mark.parametrize(
    ("text", "span"),
    [("tmux", "`tmux`"), ("a`b", "`` a`b ``"), ("``", "``` `` ```"), (" x", "`  x `")],
)
def test_code_spans(text: str, span: str) -> None:
    assert image_changes.code(text) == span
