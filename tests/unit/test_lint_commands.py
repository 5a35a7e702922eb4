"""LAY009..LAY011 (lint_commands.py) through the whole lint, and how the lint treats waivers of
the content rules (LAY101..LAY113), which only the built image can judge."""

from __future__ import annotations

import time

import pytest

from pipeline.core import lint, lint_commands, repo

BASE = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "9a2b" * 16
CLUSTER = (
    f"environment: nonprod\nbaseImage: {BASE}\nregistry: registry.example.com/layering\n"
    "pools:\n  worker: demo\n"
).encode()


def containerfile(*lines: str) -> str:
    body = "\n".join(lines)
    return f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\n{body}\nRUN ostree container commit\n"


def findings(text: str, image_yaml: str | None = None) -> list[lint.Finding]:
    files = {"images/demo/Containerfile": text.encode(), "clusters/nonprod/cluster.yaml": CLUSTER}
    if image_yaml is not None:
        files["images/demo/image.yaml"] = image_yaml.encode()
    return lint.lint_repository(repo.parse_files(files))


def found(text: str, rules: tuple[str, ...] = ("LAY009", "LAY010", "LAY011")) -> list[tuple]:
    return [(f.id, f.severity, f.line) for f in findings(text) if f.id in rules]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["RUN dnf -y update"], [("LAY009", "warning", 3)]),
        (["RUN yum upgrade --refresh && dnf clean all"], [("LAY009", "warning", 3)]),
        (["RUN microdnf distro-sync"], [("LAY009", "warning", 3)]),
        (["RUN /usr/bin/rpm-ostree upgrade"], [("LAY009", "warning", 3)]),
        (["RUN dnf -y update kernel-tools"], []),  # named packages: only they move
        (["RUN dnf -y install htop"], []),
        # a builder stage's update never ships
        (["FROM registry.example.com/ubi9@sha256:" + "1" * 64 + " AS b", "RUN dnf update"], []),
        (["RUN rpm-ostree kargs --append=nosmt"], [("LAY010", "error", 3)]),
        (["RUN echo rpm-ostree kargs"], []),
    ],
)
def test_update_and_kargs(lines: list[str], expected: list[tuple]) -> None:
    text = containerfile(*lines)
    if lines[0].startswith("FROM"):
        text = f"{lines[0]}\n{lines[1]}\n" + containerfile("RUN true")
        expected = []
    assert found(text) == expected


LAY011 = [("LAY011", "warning", 3)]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["RUN systemctl enable foo"], LAY011),
        (["RUN systemctl enable --now foo.timer"], LAY011),
        (["RUN systemctl --root=/ enable a.service b"], LAY011),  # one finding a RUN
        (["RUN systemctl --root / enable getty@tty1.service"], LAY011),
        # provided: copied by name, into a unit directory, written or installed by a RUN
        (["COPY foo.service /etc/systemd/system/", "RUN systemctl enable foo"], []),
        (["COPY units/ /etc/systemd/system/", "RUN systemctl enable foo"], []),
        (["COPY rootfs/ /", "RUN systemctl enable foo"], []),
        (["COPY getty@.service /usr/lib/systemd/system/", "RUN systemctl enable getty@tty2"], []),
        (["RUN printf '[Unit]\\n' > /etc/systemd/system/foo.service && systemctl enable foo"], []),
        (["RUN install -m644 foo.service /usr/lib/systemd/system && systemctl enable foo"], []),
        (["RUN rpm-ostree install chrony && systemctl enable chronyd"], []),
        (["RUN systemctl enable chronyd", "RUN rpm -ivh /tmp/chrony.rpm"], []),
        (["RUN systemctl enable $UNIT"], []),  # cannot be seen
        # a unit file copied elsewhere does not provide another unit
        (
            ["COPY foo.service /etc/systemd/system/", "RUN systemctl enable bar"],
            [("LAY011", "warning", 4)],
        ),
        (["RUN systemctl disable foo"], []),
    ],
)
def test_enabled_units_need_a_provider(lines: list[str], expected: list[tuple]) -> None:
    assert found(containerfile(*lines)) == expected


def test_lay011_message_says_how_to_waive() -> None:
    (finding,) = [
        f for f in findings(containerfile("RUN systemctl enable kdump")) if f.id == "LAY011"
    ]
    assert finding.path == "images/demo/Containerfile"
    assert "kdump.service" in finding.message
    assert "waive LAY011" in finding.message


def test_enabled_units_reads_systemctl_options() -> None:
    argv = ["systemctl", "--now", "--root", "/", "enable", "a", "b.socket", "/x/c.timer", "d@1"]
    assert lint_commands.enabled_units(argv) == ["a.service", "b.socket", "c.timer", "d@1.service"]
    assert lint_commands.enabled_units(["systemctl", "start", "a"]) == []
    assert lint_commands.enabled_units(["echo", "enable", "a"]) == []


def test_waivers_of_the_command_rules_work_like_the_others() -> None:
    text = containerfile("RUN dnf -y update")
    waiver = "allow:\n  - rule: LAY009\n    reason: the vendor ships the fix only in updates\n"
    assert [f.id for f in findings(text, waiver)] == []
    stale = "allow:\n  - rule: LAY010\n    reason: no longer needed\n"
    assert [f.id for f in findings(text, stale)] == ["LAY009", "LAY006"]


def test_content_rule_waivers_are_never_stale_in_the_static_lint() -> None:
    waiver = "allow:\n  - rule: LAY106\n    reason: /var/lib/foo is seeded once on purpose\n"
    assert findings(containerfile("RUN true"), waiver) == []


def test_hostile_run_lines_stay_linear() -> None:
    units = " ".join(f"u{i}" for i in range(5_000))  # the Containerfile stays under 256 KiB
    text = containerfile(
        f"RUN systemctl enable {units}",
        "RUN " + "/a/b.service;" * 5_000,
        "RUN dnf update " + "-y " * 10_000,
    )
    started = time.monotonic()
    result = [f for f in findings(text) if f.id in ("LAY009", "LAY011")]
    print(f"hostile RUN lines linted in {time.monotonic() - started:.2f}s")
    assert [(f.id, f.line) for f in result] == [("LAY011", 3), ("LAY009", 5)]
    assert "u0.service, u1.service, u2.service, u3.service, u4.service and 4995 more" in (
        result[0].message
    )
