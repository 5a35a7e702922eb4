"""The content rules LAY101..LAY113 over synthetic images: a small base and the changes of the
build's layers, written as {path: what} (see `built`)."""

from __future__ import annotations

import typing

import pytest

from pipeline.core import content_lint, content_rules, repo, repo_schema, rpm_packages
from pipeline.core.file_index import FileEntry

DIR = FileEntry("dir", 0o755)
FILE = FileEntry("file", 0o644, size=10)
BASE_PACKAGES = [
    rpm_packages.Package("bash", "5.1.8-9.el9", "x86_64"),
    rpm_packages.Package("openssl", "1:3.0.7-27.el9", "x86_64"),
    rpm_packages.Package("vim-minimal", "2:8.2.2637-20.el9", "x86_64"),
]


def _tree(*paths: str, files: tuple[str, ...] = ()) -> dict[str, FileEntry]:
    tree = {path: DIR for path in paths}
    tree.update({path: FILE for path in files})
    return tree


BASE = {
    **_tree("/", "/etc", "/etc/pki", "/etc/yum.repos.d", "/usr", "/usr/lib", "/usr/share"),
    **_tree("/var", "/var/lib", "/var/log", "/run", "/tmp", "/boot", "/root", "/usr/lib/modules"),
    **_tree("/usr/lib/modules/5.14.0-1.el9", files=("/usr/lib/modules/5.14.0-1.el9/vmlinuz",)),
    "/var/run": FileEntry("link", 0o777, target="../run"),
    "/etc/hostname": FileEntry("file", 0o644, size=0),  # the base's own: never LAY108
}


def entry(what: str) -> FileEntry | None:
    if what.startswith("link:"):
        return FileEntry("link", 0o777, target=what.removeprefix("link:"))
    return {"file": FILE, "empty": FileEntry("file", 0o644), "dir": DIR, "gone": None}[what]


def built(
    spec: dict[str, str],
    *,
    base: dict[str, FileEntry] | None = None,
    packages: list[rpm_packages.Package] | None = None,
) -> content_lint.ImageContent:
    """One layer of changes: "file", "empty" (a file of size 0), "dir", "link:TARGET", "gone"
    (a whiteout), "opaque" (an opaque directory), "badname" (a file whose name is not UTF-8)."""
    changes = []
    for path, what in spec.items():
        if what == "opaque":
            changes.append(content_lint.LayerChange(path, DIR, opaque=True))
        elif what == "badname":
            changes.append(content_lint.LayerChange(path, FILE, utf8=False))
        else:
            changes.append(content_lint.LayerChange(path, entry(what)))
    return content_lint.ImageContent(
        BASE if base is None else base,
        changes,
        base_packages=BASE_PACKAGES,
        built_packages=packages,
    )


def found(content: content_lint.ImageContent) -> set[tuple[str, str, str]]:
    return {(f.id, f.severity, f.path) for f in content_rules.findings(content)}


def _pkg(name: str, evr: str) -> rpm_packages.Package:
    return rpm_packages.Package(name, evr, "x86_64")


NEW_KERNEL = {
    "/usr/lib/modules/5.14.0-2.el9": "dir",
    "/usr/lib/modules/5.14.0-2.el9/vmlinuz": "file",
}
FIRING = [
    ("var-run-dir", {"/var/run": "dir"}, {("LAY101", "error", "/var/run")}),
    ("var-run-gone", {"/var/run": "gone"}, {("LAY101", "error", "/var/run")}),
    ("var-run-elsewhere", {"/var/run": "link:/tmp"}, {("LAY101", "error", "/var/run")}),
    ("usr-etc", {"/usr/etc": "dir", "/usr/etc/a.conf": "file"}, {("LAY102", "error", "/usr/etc")}),
    (
        "second-kernel",
        NEW_KERNEL,
        {("LAY103", "error", "/usr/lib/modules"), ("LAY104", "warning", "/usr/lib/modules")},
    ),
    (
        "replaced-kernel",
        {"/usr/lib/modules/5.14.0-1.el9": "gone", **NEW_KERNEL},
        {("LAY104", "warning", "/usr/lib/modules")},
    ),
    (
        "kernel-behind-an-opaque-dir",
        {"/usr/lib/modules": "opaque", **NEW_KERNEL},
        {("LAY104", "warning", "/usr/lib/modules")},
    ),
    (
        "kernel-whited-out",
        {"/usr/lib/modules": "gone"},
        {("LAY104", "warning", "/usr/lib/modules")},
    ),
    (
        "kargs",
        {
            "/usr/lib/bootc": "dir",
            "/usr/lib/bootc/kargs.d": "dir",
            "/usr/lib/bootc/kargs.d/a.toml": "file",
        },
        {("LAY105", "warning", "/usr/lib/bootc/kargs.d")},
    ),
    (
        "var",
        {"/var/lib/foo": "dir", "/var/lib/foo/db": "file", "/var/cache": "dir"},
        {("LAY106", "warning", "/var/lib/foo"), ("LAY106", "warning", "/var/cache")},
    ),
    (
        "runtime",
        {"/var/log/x.log": "file", "/tmp/t": "file", "/run/r": "dir"},
        {("LAY107", "warning", p) for p in ("/var/log", "/tmp", "/run")},
    ),
    ("injected", {"/etc/resolv.conf": "empty"}, {("LAY108", "warning", "/etc/resolv.conf")}),
    ("boot", {"/boot/vmlinuz-6": "file"}, {("LAY109", "warning", "/boot")}),
    ("not-utf8", {"/usr/share/caf\\xe9": "badname"}, {("LAY110", "error", "/usr/share")}),
    (
        "credentials",
        {
            "/etc/pki/entitlement": "dir",
            "/etc/pki/entitlement/1.pem": "file",
            "/etc/yum.repos.d/redhat.repo": "file",
            "/root/.docker": "dir",
            "/root/.docker/config.json": "file",
            "/root/.ssh": "dir",
            "/root/.ssh/id_ed25519": "file",
        },
        {
            ("LAY111", "error", "/etc/pki/entitlement"),
            ("LAY111", "error", "/etc/yum.repos.d"),
            ("LAY111", "error", "/root/.docker"),
            ("LAY111", "error", "/root/.ssh"),
        },
    ),
    ("toplevel", {"/data": "dir", "/data/x": "file"}, {("LAY112", "warning", "/data")}),
    ("toplevel-file", {"/hello": "file"}, {("LAY112", "warning", "/hello")}),
]
QUIET = [
    ("clean", {"/usr/bin/htop": "file", "/etc/htoprc": "file", "/usr/share/htop": "dir"}),
    ("var-run-to-run", {"/var/run": "link:/run"}),
    ("same-kernel-again", {"/usr/lib/modules/5.14.0-1.el9/vmlinuz": "file"}),
    ("var-log-dir-itself", {"/var/log": "dir", "/tmp": "dir"}),
    ("nonempty-hostname", {"/etc/hostname": "file"}),
    ("boot-whited-out", {"/boot": "gone"}),
    ("not-utf8-gone-again", {"/usr/share/caf\\xe9": "badname", "/usr/share": "opaque"}),
    (
        "entitlement-host-link",
        {"/etc/pki/entitlement-host": "link:/run/secrets/etc-pki-entitlement"},
    ),
    ("public-key", {"/root/.ssh": "dir", "/root/.ssh/id_ed25519.pub": "file"}),
    ("under-usr", {"/usr/share/data": "dir", "/usr/share/data/x": "file"}),
]


@pytest.mark.parametrize(("name", "spec", "expected"), FIRING, ids=[c[0] for c in FIRING])
def test_each_rule_fires(
    name: str, spec: dict[str, str], expected: set[tuple[str, str, str]]
) -> None:
    assert found(built(spec)) == expected


@pytest.mark.parametrize(("name", "spec"), QUIET, ids=[c[0] for c in QUIET])
def test_each_rule_stays_quiet(name: str, spec: dict[str, str]) -> None:
    assert found(built(spec)) == set()


def test_messages_name_what_is_wrong_and_the_fix() -> None:
    messages = {
        f.id: f.message
        for f in content_rules.findings(
            built({"/usr/lib/modules/5.14.0-1.el9": "gone", **NEW_KERNEL, "/var/lib/foo": "dir"})
        )
    }
    assert "5.14.0-2.el9" in messages["LAY104"]
    assert "5.14.0-1.el9" in messages["LAY104"]
    assert "MachineConfig" in messages["LAY104"]
    assert messages["LAY106"].startswith("added under /var (/var/lib/foo), which a node takes")
    assert "tmpfiles.d" in messages["LAY106"]
    assert all(f.line is None for f in content_rules.findings(built({"/data": "dir"})))


@pytest.mark.parametrize(
    ("packages", "expected"),
    [
        # bash removed, openssl older: two findings, naming them
        (
            [_pkg("openssl", "1:3.0.1-1.el9"), _pkg("vim-minimal", "2:8.2.2637-20.el9")],
            ["removes 1 package(s) of the base (bash)", "openssl 1:3.0.7-27.el9.x86_64 -> "],
        ),
        # upgraded and added: nothing
        ([*BASE_PACKAGES[:2], _pkg("vim-minimal", "2:9.0-1.el9"), _pkg("htop", "3.3.0-1.el9")], []),
        (None, []),  # the build left the rpm database alone
    ],
)
def test_lay113_names_removed_and_downgraded_packages(
    packages: list[rpm_packages.Package] | None, expected: list[str]
) -> None:
    messages = [
        f.message for f in content_rules.findings(built({}, packages=packages)) if f.id == "LAY113"
    ]
    assert len(messages) == len(expected)
    assert all(part in message for part, message in zip(expected, messages, strict=True))


@pytest.mark.parametrize(
    ("left", "right", "order"),
    [
        ("1.0-1", "1.0-2", -1),
        ("1.10-1", "1.9-1", 1),
        ("1.01-1", "1.1-1", 0),
        ("2:1.0-1", "1:9.0-1", 1),
        ("1.0~rc1-1", "1.0-1", -1),
        ("1.0^git1-1", "1.0-1", 1),
        ("1.0a-1", "1.0-1", 1),
        ("a-1", "1-1", -1),
        ("1.0-1.el9", "1.0-1.el9_2", -1),
        ("5.14.0-427.el9", "5.14.0-70.el9", 1),
    ],
)
def test_compare_versions_is_rpms_order(left: str, right: str, order: int) -> None:
    assert rpm_packages.compare_versions(left, right) == order
    assert rpm_packages.compare_versions(right, left) == -order


def test_many_paths_of_one_rule_give_a_bounded_number_of_findings() -> None:
    spec = {f"/var/lib/big/f{i}": "file" for i in range(50_000)}
    spec.update({f"/var/spool/d{i}/x": "file" for i in range(30)})
    spec.update({f"/top{i}": "file" for i in range(50_000)})
    findings = content_rules.findings(built(spec))
    by_rule = {rule: [f for f in findings if f.id == rule] for rule in ("LAY106", "LAY112")}
    assert len(by_rule["LAY106"]) == content_rules.MAX_GROUPS + 1
    assert len(by_rule["LAY112"]) == content_rules.MAX_GROUPS + 1
    assert "(50000 paths)" in by_rule["LAY106"][0].message  # /var/lib/big sorts first
    assert sum(len(f.message) for f in findings) < 20_000


def _waiver(rule: str, reason: str = "the base provides it") -> repo_schema.Waiver:
    return repo_schema.Waiver.model_validate({"rule": rule, "reason": reason})


def test_check_applies_waivers_and_reports_stale_ones() -> None:
    content = built({"/var/lib/foo": "dir", "/var/run": "dir", "/data": "dir"})
    report = content_rules.check(
        content, [_waiver("LAY106", "seeded on purpose"), _waiver("LAY109"), _waiver("LAY001")]
    )
    assert [(f.id, f.path) for f in report.findings] == [
        ("LAY101", "/var/run"),  # errors first
        ("LAY112", "/data"),
    ]
    assert [(f.id, reason) for f, reason in report.waived] == [("LAY106", "seeded on purpose")]
    assert report.stale == ("LAY109",)  # LAY001 is the static lint's to judge
    assert [f.id for f in report.errors] == ["LAY101"]
    assert [f.id for f in report.warnings] == ["LAY112"]
    assert report.headline().startswith("LAY101 error /var/run: is a dir, not a symbolic link")
    assert report.headline().endswith(", and 1 more")
    assert content_rules.check(built({}), []).headline() == "no content findings"


def test_waivers_accept_every_rule_but_lay006() -> None:
    accepted = set(typing.get_args(repo_schema.Waiver.model_fields["rule"].annotation))
    assert accepted == (set(repo.RULE_IDS) | set(content_rules.CONTENT_RULE_IDS)) - {"LAY006"}
    assert content_rules.CONTENT_RULE_IDS[0] == "LAY101"
    assert content_rules.CONTENT_RULE_IDS[-1] == "LAY113"
