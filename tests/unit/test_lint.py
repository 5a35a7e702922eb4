from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core import lint, lint_packages, repo

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "containerfiles"
BASE_REPO = "quay.io/openshift-release-dev/ocp-v4.0-art-dev"
NONPROD_DIGEST = "sha256:" + "9a2b" * 16
PROD_DIGEST = "sha256:" + "7c3d" * 16
OTHER_DIGEST = "sha256:" + "1f0c" * 16
PINNED_UBI = "registry.access.redhat.com/ubi9/ubi@sha256:" + "5" * 64
OK_TAIL = "RUN rpm-ostree install tmux && \\\n    ostree container commit\n"
OK = f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\n{OK_TAIL}"
COPY_FROM_B = OK.replace("RUN", "COPY --from=b /x /x\nRUN")
COPY_FROM_0 = OK.replace("RUN", "COPY --from=0 /x /x\nRUN")


def cluster(environment: str, digest: str, pools: dict[str, str]) -> bytes:
    lines = [
        f"environment: {environment}",
        f"baseImage: {BASE_REPO}@{digest}",
        "registry: registry.example.com/layering",
        "pools:" + ("" if pools else " {}"),
        *(f"  {pool}: {image}" for pool, image in pools.items()),
    ]
    return ("\n".join(lines) + "\n").encode()


def machineconfig(role: str, extensions: list[str]) -> bytes:
    return (
        "apiVersion: machineconfiguration.openshift.io/v1\nkind: MachineConfig\n"
        "metadata:\n  name: 50-ext\n  labels:\n"
        f"    machineconfiguration.openshift.io/role: {role}\n"
        f"spec:\n  extensions: [{', '.join(extensions)}]\n"
    ).encode()


def repository(
    text: str,
    *,
    image_yaml: str | None = None,
    pools: dict[str, str] | None = None,
    extra: dict[str, bytes] | None = None,
) -> repo.Repository:
    files = {
        "images/demo/Containerfile": text.encode(),
        "clusters/nonprod/cluster.yaml": cluster(
            "nonprod", NONPROD_DIGEST, {"worker": "demo"} if pools is None else pools
        ),
    }
    if image_yaml is not None:
        files["images/demo/image.yaml"] = image_yaml.encode()
    files.update(extra or {})
    return repo.parse_files(files)


def found(
    text: str,
    rule: str,
    *,
    image_yaml: str | None = None,
    pools: dict[str, str] | None = None,
) -> list[tuple[str, int | None]]:
    findings = lint.lint_repository(repository(text, image_yaml=image_yaml, pools=pools))
    return [(f.severity, f.line) for f in findings if f.id == rule]


def test_clean_image_has_no_findings() -> None:
    assert lint.lint_repository(repository(OK)) == []


# --- LAY001 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (OK, []),
        (f"FROM {BASE_REPO}\n{OK_TAIL}", []),
        (f"FROM {BASE_REPO}@{NONPROD_DIGEST}\n{OK_TAIL}", []),
        (f"FROM {BASE_REPO}:4.16\n{OK_TAIL}", []),
        (f"FROM {BASE_REPO}@{OTHER_DIGEST}\n{OK_TAIL}", [("error", 1)]),
        (f"FROM quay.io/openshift-release-dev/ocp-release\n{OK_TAIL}", [("error", 1)]),
        (f"FROM scratch\n{OK_TAIL}", [("error", 1)]),
        (f"FROM Not A Ref\n{OK_TAIL}", None),  # unusable FROM -> LAY006
        (f"ARG BASE_IMAGE={BASE_REPO}@{OTHER_DIGEST}\nFROM ${{BASE_IMAGE}}\n{OK_TAIL}", []),
        (f"ARG BASE_IMAGE=fedora/fedora\nFROM ${{BASE_IMAGE}}\n{OK_TAIL}", [("warning", 2)]),
        # the final stage builds FROM an earlier stage: its root is what counts
        (f"FROM {BASE_REPO}@{OTHER_DIGEST} AS base\nRUN a\nFROM base\n{OK_TAIL}", [("error", 1)]),
        (f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}} AS base\nRUN a\nFROM base\n{OK_TAIL}", []),
    ],
)
def test_lay001_final_base(text: str, expected: list[tuple[str, int]] | None) -> None:
    if expected is None:
        assert found(text, "LAY006") == [("error", 1)]
    else:
        assert found(text, "LAY001") == expected


def test_lay001_message_names_both_digests_and_the_cluster() -> None:
    findings = lint.lint_repository(repository(f"FROM {BASE_REPO}@{OTHER_DIGEST}\n{OK_TAIL}"))
    assert [str(f) for f in findings] == [
        "images/demo/Containerfile:1: LAY001 error: FROM pins sha256:1f0c1f0c1f0c…, but "
        "cluster nonprod runs sha256:9a2b9a2b9a2b…; drop the digest to build on the "
        "cluster's base"
    ]


def test_lay001_checks_every_cluster_using_the_image() -> None:
    extra = {"clusters/prod/cluster.yaml": cluster("prod", PROD_DIGEST, {"worker": "demo"})}
    text = f"FROM {BASE_REPO}@{NONPROD_DIGEST}\n{OK_TAIL}"
    findings = [f for f in lint.lint_repository(repository(text, extra=extra))]
    assert [f.id for f in findings] == ["LAY001"]
    assert "cluster prod runs sha256:7c3d" in findings[0].message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"FROM docker.io/library/fedora\n{OK_TAIL}", [("warning", 1)]),
        (f"FROM {BASE_REPO}@{OTHER_DIGEST}\n{OK_TAIL}", []),
        (OK, []),
    ],
)
def test_lay001_image_used_by_no_cluster(text: str, expected: list[tuple[str, int]]) -> None:
    assert found(text, "LAY001", pools={}) == expected


# --- LAY002 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"FROM {PINNED_UBI} AS b\nRUN make\n{OK}", []),
        (f"FROM registry.access.redhat.com/ubi9/ubi:latest AS b\nRUN make\n{OK}", [("error", 1)]),
        (f"FROM registry.access.redhat.com/ubi9/ubi AS b\nRUN make\n{OK}", [("error", 1)]),
        (f"FROM scratch AS files\nCOPY a /a\n{OK}", []),
        (f"ARG B={PINNED_UBI}\nFROM ${{B}} AS b\nRUN make\n{OK}", []),
        (f"ARG B\nFROM ${{B}} AS b\nRUN make\n{OK}", [("error", 2)]),
        (f"FROM {PINNED_UBI} AS b\nFROM b AS c\nRUN make\n{OK}", []),
        (f"FROM {PINNED_UBI} AS b\nRUN make\n{COPY_FROM_B}", []),
        (OK.replace("RUN", "COPY --from=quay.io/a/tools:1 /x /x\nRUN"), [("error", 3)]),
        (OK.replace("RUN", f"COPY --from={PINNED_UBI} /x /x\nRUN"), []),
        (f"FROM {PINNED_UBI} AS b\nRUN make\n{COPY_FROM_0}", []),
    ],
)
def test_lay002_other_stages_pinned(text: str, expected: list[tuple[str, int]]) -> None:
    assert found(text, "LAY002") == expected


# --- LAY003 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (OK_TAIL, []),
        ("RUN rpm-ostree install tmux\nRUN ostree container commit\n", []),
        ("RUN rpm-ostree install tmux && bootc container lint\n", []),
        ("RUN rpm-ostree install tmux && /usr/bin/ostree container commit\n", []),
        ('RUN ["ostree", "container", "commit"]\n', []),
        ('RUN ["/bin/sh", "-c", "rpm-ostree install x && ostree container commit"]\n', []),
        ("RUN rpm-ostree install tmux\n", [("error", 3)]),
        ("RUN ostree container commit && rm -rf /tmp/x\n", [("error", 3)]),
        ("RUN ostree container commit\nRUN rpm-ostree install tmux\n", [("error", 4)]),
        ("RUN rpm-ostree install tmux # && ostree container commit\n", [("error", 3)]),
        ("RUN echo ostree container commit\n", [("error", 3)]),
        ("COPY a /etc/a\n", [("error", 2)]),
        (
            "RUN rpm-ostree install tmux \\\n    # comment between lines\n"
            "    && ostree container commit\n",
            [],
        ),
    ],
)
def test_lay003_last_run_commits(tail: str, expected: list[tuple[str, int]]) -> None:
    assert found(f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\n{tail}", "LAY003") == expected


def test_lay003_commit_in_parent_stage_counts() -> None:
    text = f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}} AS base\n{OK_TAIL}FROM base\nCOPY a /etc/a\n"
    assert found(text, "LAY003") == []


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("commented-out-commit.Containerfile", [("error", 4)]),
        ("exec-form.Containerfile", []),
        ("multistage-kmod.Containerfile", []),
    ],
)
def test_lay003_fixtures(fixture: str, expected: list[tuple[str, int]]) -> None:
    assert found((FIXTURES / fixture).read_text(), "LAY003") == expected


# --- LAY004 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        ("rpm-ostree install kernel-rt-core", [("error", 3)]),
        ("dnf install -y kernel-rt", [("error", 3)]),
        ("rpm-ostree install https://e.com/kernel-rt-kvm-5.14.0-1.el9.x86_64.rpm", [("error", 3)]),
        ("rpm-ostree override remove kernel-rt-core", []),
        ("rpm-ostree install kernel-tools", []),
        ("echo kernel-rt", []),
    ],
)
def test_lay004_realtime_kernel(run: str, expected: list[tuple[str, int]]) -> None:
    text = f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nRUN {run} && ostree container commit\n"
    assert found(text, "LAY004") == expected


def test_lay004_fixture_override_remove_with_install() -> None:
    text = (FIXTURES / "realtime-kernel.Containerfile").read_text()
    assert found(text, "LAY004") == [("error", 2), ("error", 2)]


def test_lay004_ignores_builder_stages() -> None:
    text = f"FROM {PINNED_UBI} AS b\nRUN dnf install -y kernel-rt-devel\n{OK}"
    assert found(text, "LAY004") == []


# --- LAY005 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("packages", "expected"),
    [
        ("libreswan", [("warning", 3)]),
        ("NetworkManager-libreswan", [("warning", 3)]),
        ("usbguard sysstat", [("warning", 3), ("warning", 3)]),
        ("krb5-workstation", [("warning", 3)]),
        ("kernel-devel", [("warning", 3)]),
        ("kata-containers", [("warning", 3)]),
        ("crun-wasm", [("warning", 3)]),
        ("pacemaker", [("warning", 3)]),
        ("tmux htop", []),
    ],
)
def test_lay005_extension_packages(packages: str, expected: list[tuple[str, int]]) -> None:
    text = f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nRUN rpm-ostree install {packages} && \\\n"
    text += "    ostree container commit\n"
    assert found(text, "LAY005") == expected


@pytest.mark.parametrize(
    ("pools", "role", "extensions", "severity"),
    [
        ({"worker": "demo"}, "worker", ["ipsec"], "error"),
        ({"worker": "demo"}, "worker", ["usbguard"], "warning"),
        ({"worker": "demo"}, "master", ["ipsec"], "warning"),
        ({"vpn": "demo"}, "vpn", ["ipsec"], "error"),
        ({"vpn": "demo"}, "worker", ["ipsec"], "error"),  # custom pools inherit worker configs
        ({"vpn": "demo", "worker": "other"}, "infra", ["ipsec"], "warning"),
    ],
)
def test_lay005_machineconfig_for_the_same_pool(
    pools: dict[str, str], role: str, extensions: list[str], severity: str
) -> None:
    text = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN rpm-ostree install libreswan && \\\n"
    text += "    ostree container commit\n"
    extra = {
        "clusters/nonprod/machineconfigs/50-ext.yaml": machineconfig(role, extensions),
        "images/other/Containerfile": OK.encode(),
    }
    findings = lint.lint_repository(repository(text, pools=pools, extra=extra))
    lay005 = [f for f in findings if f.id == "LAY005"]
    assert [f.severity for f in lay005] == [severity]
    if severity == "error":
        assert "clusters/nonprod/machineconfigs/50-ext.yaml" in lay005[0].message


# --- LAY006 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "path", "line"),
    [
        ({"clusters/nonprod/cluster.yaml": b"pools: [\n"}, "clusters/nonprod/cluster.yaml", 2),
        ({"images/demo/image.yaml": b"allow: [LAY001]\n"}, "images/demo/image.yaml", 1),
        ({"images/Demo2/Containerfile": b"FROM x\n"}, "images/Demo2", None),
        ({"images/demo/Containerfile": b"\x00\x01"}, "images/demo/Containerfile", None),
        (
            {"clusters/nonprod/machineconfigs/50-x.yaml": b"a: b: c\n"},
            "clusters/nonprod/machineconfigs/50-x.yaml",
            1,
        ),
        (
            {"clusters/nonprod/cluster.yaml": cluster("nonprod", NONPROD_DIGEST, {"w": "nope"})},
            "clusters/nonprod/cluster.yaml",
            None,
        ),
    ],
)
def test_lay006_repository_problems(extra: dict[str, bytes], path: str, line: int | None) -> None:
    files = {
        "images/demo/Containerfile": OK.encode(),
        "clusters/nonprod/cluster.yaml": cluster("nonprod", NONPROD_DIGEST, {"worker": "demo"}),
        **extra,
    }
    findings = lint.lint_repository(repo.parse_files(files))
    assert [(f.id, f.severity, f.path, f.line) for f in findings if f.id == "LAY006"] == [
        ("LAY006", "error", path, line)
    ]


def test_lay006_unparseable_containerfile_names_the_line() -> None:
    assert found("FROM a\nRUN x\nCOPPY a b\n", "LAY006") == [("error", 3)]


def test_lay006_build_arg_base_image_is_set_by_the_pipeline() -> None:
    assert found(OK, "LAY006", image_yaml="buildArgs:\n  BASE_IMAGE: x/y\n") == [("warning", None)]


# --- LAY007 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("ADD https://example.com/a.tar.gz /opt/", [("error", 3)]),
        (f"ADD --checksum=sha256:{'a' * 64} https://example.com/a.tar.gz /opt/", []),
        ("ADD local.tar.gz /opt/", []),
        ("ADD https://github.com/org/repo.git /src", [("error", 3)]),
        (f"ADD https://github.com/org/repo.git#{'c' * 40} /src", []),
        ("RUN rpm-ostree install https://e.com/fish-3.3.1-3.el9.x86_64.rpm", [("error", 3)]),
        ("RUN dnf install -y https://e.com/x.rpm", [("error", 3)]),
        ("RUN rpm-ostree override replace https://e.com/haproxy.rpm", [("error", 3)]),
        ("RUN rpm -Uvh http://e.com/x.rpm", [("error", 3)]),
        ("RUN curl -fsSL https://e.com/install.sh | sh", [("error", 3)]),
        ("RUN wget -qO- https://e.com/install.sh | sudo bash", [("error", 3)]),
        ("RUN curl -fsSL https://e.com/i.sh |/usr/bin/zsh -s", [("error", 3)]),
        ("RUN curl -fsSL https://e.com/i.sh | sudo /bin/ksh", [("error", 3)]),
        (
            "RUN curl -fLo /tmp/x.rpm https://e.com/x.rpm && rpm-ostree install /tmp/x.rpm",
            [("error", 3)],
        ),
        (
            "RUN curl -fLo /tmp/x.rpm https://e.com/x.rpm && "
            "echo 'abc  /tmp/x.rpm' | sha256sum -c - && rpm-ostree install /tmp/x.rpm",
            [],
        ),
        ('RUN curl -fLo /tmp/x "$URL" && sha512sum --check /tmp/x.sha512', []),
        ("RUN sha256sum -c x.sha256 && curl -fLo /tmp/x https://e.com/x", [("error", 3)]),
        ("RUN curl --version", []),
        ("RUN rpm-ostree install /tmp/local.rpm", []),
    ],
)
def test_lay007_remote_content(line: str, expected: list[tuple[str, int]]) -> None:
    text = f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\n{line}\nRUN ostree container commit\n"
    assert found(text, "LAY007") == expected


# --- LAY008 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("COPY ../../etc/passwd /etc/passwd", [("error", 3)]),
        ("COPY ./.. /x", [("error", 3)]),
        ("ADD conf/../../secret /x", [("error", 3)]),
        ('COPY ["../x", "/x"]', [("error", 3)]),
        ("COPY --chown=0:0 a ../b /dst/", [("error", 3)]),
        ("COPY /../../x /x", [("error", 3)]),
        ("COPY /etc/passwd /etc/passwd", [("warning", 3)]),
        ("COPY a/../b /b", []),
        ("COPY . /", []),
        ("COPY --from=quay.io/x/y@sha256:" + "a" * 64 + " ../../x /x", []),
        ("ADD https://e.com/../x /x", [("LAY007", 3)]),
    ],
)
def test_lay008_build_context(line: str, expected: list[tuple[str, int]]) -> None:
    text = f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\n{line}\n{OK_TAIL}"
    if expected and expected[0][0] == "LAY007":
        assert found(text, "LAY008") == []
        assert found(text, "LAY007") == [("error", 3)]
    else:
        assert found(text, "LAY008") == expected


def test_escapes_context_fixture() -> None:
    text = (FIXTURES / "escapes-context.Containerfile").read_text()
    findings = lint.lint_repository(repository(text))
    assert [(f.id, f.line) for f in findings] == [("LAY008", 3), ("LAY007", 4), ("LAY007", 5)]


# --- waivers ----------------------------------------------------------------------------------


def test_waiver_drops_only_that_rule_for_that_image() -> None:
    text = (
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
        "RUN rpm-ostree install https://e.com/x.rpm libreswan && ostree container commit\n"
    )
    waiver = "allow:\n  - rule: LAY007\n    reason: vendor RPM is GPG-checked by rpm\n"
    extra = {"images/other/Containerfile": text.encode()}
    report = lint.report(repository(text, image_yaml=waiver, extra=extra))
    assert [(f.id, f.path) for f in report.findings] == [
        ("LAY005", "images/demo/Containerfile"),
        ("LAY005", "images/other/Containerfile"),
        ("LAY007", "images/other/Containerfile"),
    ]
    assert [(f.id, f.path) for f in report.waived] == [("LAY007", "images/demo/Containerfile")]


def test_stale_waiver_is_reported() -> None:
    waiver = "allow:\n  - rule: LAY004\n    reason: we used to need the rt kernel\n"
    findings = lint.lint_repository(repository(OK, image_yaml=waiver))
    assert [(f.id, f.severity, f.path) for f in findings] == [
        ("LAY006", "warning", "images/demo/image.yaml")
    ]
    assert "remove the waiver" in findings[0].message


def test_lint_image_and_image_filter() -> None:
    extra = {
        "images/other/Containerfile": b"FROM scratch\nCOPY a /a\n",
        "clusters/prod/cluster.yaml": b"environment: prod\n",
    }
    repo_ = repository(OK, extra=extra)
    assert lint.lint_image(repo_, "demo") == []
    assert {f.id for f in lint.lint_image(repo_, "other")} == {"LAY001", "LAY003"}
    # repository-wide problems (clusters/) are part of every image's lint
    assert {(f.id, f.path) for f in lint.lint_repository(repo_, image="demo")} == {
        ("LAY006", "clusters/prod/cluster.yaml")
    }
    with pytest.raises(KeyError):
        lint.report(repo_, "missing")


def test_example_repository_is_clean() -> None:
    from pipeline.adapters import fs

    root = Path(__file__).resolve().parents[2]
    report = lint.report(fs.load(root))
    assert report.errors == []
    assert [(f.id, f.path) for f in report.warnings] == [
        ("LAY005", "images/libreswan/Containerfile")
    ]
    assert set(report.images) >= {"hotfix-haproxy", "firewalld", "libreswan", "htop", "fish"}


def test_finding_formats() -> None:
    finding = lint.Finding("LAY003", "error", "images/a/Containerfile", 7, "fix it")
    assert str(finding) == "images/a/Containerfile:7: LAY003 error: fix it"
    assert finding.as_dict() == {
        "id": "LAY003",
        "severity": "error",
        "path": "images/a/Containerfile",
        "line": 7,
        "message": "fix it",
    }
    assert (
        str(lint.Finding("LAY006", "error", "images/B", None, "x")) == "images/B: LAY006 error: x"
    )


def test_extension_table_matches_the_mco() -> None:
    assert sorted(lint_packages.EXTENSIONS) == [
        "ipsec",
        "kerberos",
        "kernel-devel",
        "sandboxed-containers",
        "sysstat",
        "two-node-ha",
        "usbguard",
        "wasm",
    ]
    assert lint_packages.EXTENSION_OF_PACKAGE["libkadm5"] == "kerberos"
    assert lint_packages.EXTENSION_OF_PACKAGE["fence-agents-all"] == "two-node-ha"
