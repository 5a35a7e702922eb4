from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core import containerfile
from pipeline.core.containerfile import ContainerfileError, Instruction

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "containerfiles"
DIGEST = "sha256:" + "a" * 64
BASE = "quay.io/openshift-release-dev/ocp-v4.0-art-dev"


def run(text: str) -> Instruction:
    return Instruction("RUN", text, 1, 1)


def test_multi_stage_with_arg_defaults_and_stage_references() -> None:
    parsed = containerfile.parse((FIXTURES / "multistage-kmod.Containerfile").read_text())
    assert [(s.index, s.name, s.image) for s in parsed.stages] == [
        (0, "builder", "${BUILDER}"),
        (1, "base", "${BASE_IMAGE}"),
        (2, None, "base"),
    ]
    assert parsed.stages[0].resolved == (
        "registry.access.redhat.com/ubi9/ubi@sha256:" + "0" * 63 + "1"
    )
    assert parsed.stages[1].resolved is None  # ARG without default
    assert parsed.root_stage(parsed.final).index == 1
    assert parsed.stages[0].from_line == 5
    assert parsed.final.from_line == 14


def test_comment_inside_continuation_is_dropped() -> None:
    parsed = containerfile.parse((FIXTURES / "multistage-kmod.Containerfile").read_text())
    (install,) = containerfile.installs(parsed.stages[0])
    assert install.tool == "dnf"
    assert install.packages == ("kernel-devel", "kernel-headers", "make", "gcc")
    assert install.line == 6


@pytest.mark.parametrize(
    ("text", "build_args", "resolved"),
    [
        ("FROM ${BASE}\nRUN x", {}, None),
        ("ARG BASE\nFROM ${BASE}\nRUN x", {}, None),
        ("ARG BASE=a/b\nFROM ${BASE}\nRUN x", {}, "a/b"),
        ('ARG BASE="a/b"\nFROM $BASE\nRUN x', {}, "a/b"),
        ("ARG BASE=a/b\nFROM ${BASE}\nRUN x", {"BASE": "c/d"}, "c/d"),
        ("FROM ${BASE}\nRUN x", {"BASE": "c/d"}, None),  # undeclared ARG: not substituted
        ("ARG BASE\nFROM ${BASE:-x/y}\nRUN x", {}, "x/y"),
        ("ARG TAG=1\nFROM r/i:${TAG}\nRUN x", {}, "r/i:1"),
        ("from --platform=linux/amd64 r/i AS b\nrun x", {}, "r/i"),
    ],
)
def test_from_substitution(text: str, build_args: dict[str, str], resolved: str | None) -> None:
    assert containerfile.parse(text, build_args).final.resolved == resolved


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$A/${A}/${A:-d}/${A:+alt}", "a/a/a/alt"),
        ("${E:-d}/${E:+alt}/${N:-d}", "d//d"),
        ("$5 $ ${} ${A ${A:x} $$A", "$5 $ ${} ${A ${A:x} $a"),  # not variables: kept
        ("${A:-${B}}", "a}"),  # a modifier ends at the first }
        ("${A:-unclosed", "${A:-unclosed"),
        ("x${A_1}y$A_1z", "x1y1"),
        ("${N}", None),  # no value: nothing to substitute
    ],
)
def test_substitute(text: str, expected: str | None) -> None:
    variables = {"A": "a", "E": "", "A_1": "1", "A_1z": "1", "N": None}
    assert containerfile.substitute(text, variables) == expected


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("", None, "no FROM"),
        ("# only a comment\n", None, "no FROM"),
        ("RUN x\nFROM a", 1, "before the first FROM"),
        ("FROM\n", 1, "FROM needs an image"),
        ("FROM a b c d\n", 1, "cannot read FROM"),
        ("FROM a\nthis is prose, not a Containerfile\n", 2, "unknown instruction 'THIS'"),
        ("FROM a\x00\n", None, "binary"),
    ],
)
def test_unusable_containerfiles(text: str, line: int | None, fragment: str) -> None:
    with pytest.raises(ContainerfileError) as caught:
        containerfile.parse(text)
    assert caught.value.line == line
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("shell", "expected"),
    [
        ("a && b || c; d | e & f", [["a"], ["b"], ["c"], ["d"], ["e"], ["f"]]),
        ("rpm-ostree install 'a b' c", [["rpm-ostree", "install", "a b", "c"]]),
        ("a # comment && b", [["a"]]),
        ("echo a#b", [["echo", "a#b"]]),
        ("echo '# not a comment' && b", [["echo", "# not a comment"], ["b"]]),
        ("x > /dev/null 2>&1 && y", [["x"], ["y"]]),
        ("FOO=1 sudo env BAR=2 dnf install z", [["dnf", "install", "z"]]),
        ("echo 'unbalanced", [["echo", "'unbalanced"]]),
    ],
)
def test_commands(shell: str, expected: list[list[str]]) -> None:
    assert containerfile.commands(shell) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a && b", "a && b"),
        ('["ostree", "container", "commit"]', "ostree container commit"),
        ('["/bin/sh", "-c", "a && b"]', "a && b"),
        ("--mount=type=secret,id=e --network=none dnf install x", "dnf install x"),
        ('--mount=type=cache,target=/var/cache ["bash", "-c", "x"]', "x"),
        ("[not json", "[not json"),
    ],
)
def test_run_argv_text(value: str, expected: str) -> None:
    assert containerfile.run_argv_text(run(value)) == expected


@pytest.mark.parametrize(
    ("shell", "expected"),
    [
        (
            "rpm-ostree install firewalld ansible-core tmux",
            [("rpm-ostree", "install", ("firewalld", "ansible-core", "tmux"))],
        ),
        ("dnf install -y htop", [("dnf", "install", ("htop",))]),
        ("dnf -y --repo epel install htop", [("dnf", "install", ("htop",))]),
        ("dnf --setopt=x=1 install -y a b", [("dnf", "install", ("a", "b"))]),
        ("yum localinstall /tmp/a.rpm", [("yum", "localinstall", ("/tmp/a.rpm",))]),
        (
            "rpm-ostree override replace https://e.com/haproxy-2.8.1-1.el9.x86_64.rpm",
            [("rpm-ostree", "override replace", ("https://e.com/haproxy-2.8.1-1.el9.x86_64.rpm",))],
        ),
        (
            "rpm-ostree override remove kernel --install kernel-rt-core",
            [
                ("rpm-ostree", "override remove", ("kernel",)),
                ("rpm-ostree", "install", ("kernel-rt-core",)),
            ],
        ),
        ("rpm -ivh /tmp/x.rpm", [("rpm", "install", ("/tmp/x.rpm",))]),
        ("rpm -e ansible && rpm -qa", []),
        ("rpm-ostree cleanup -m && ostree container commit", []),
        ("microdnf install -y jq", [("microdnf", "install", ("jq",))]),
    ],
)
def test_installs(shell: str, expected: list[tuple[str, str, tuple[str, ...]]]) -> None:
    found = containerfile.run_installs(run(shell))
    assert [(i.tool, i.action, i.packages) for i in found] == expected


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ("kernel-rt-core", "kernel-rt-core"),
        ("https://e.com/p/fish-3.3.1-3.el9.x86_64.rpm", "fish"),
        ("/tmp/haproxy.rpm", "haproxy"),
        ("NetworkManager-libreswan-1.2.18-1.el9.x86_64.rpm", "NetworkManager-libreswan"),
        ("epel-release-latest-9.noarch.rpm", "epel-release"),
        ("bash-0:5.1.8-9.el9.x86_64.rpm", "bash"),
    ],
)
def test_package_name(spec: str, name: str) -> None:
    assert containerfile.package_name(spec) == name


@pytest.mark.parametrize(
    ("text", "expected_line"),
    [
        ("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN x\n", f"FROM {BASE}@{DIGEST}\n"),
        (f"FROM {BASE}\nRUN x\n", f"FROM {BASE}@{DIGEST}\n"),
        (
            f"FROM r/b@{'sha256:' + 'b' * 64} AS b\nRUN x\nFROM {BASE} AS final\nRUN y\n",
            f"FROM {BASE}@{DIGEST} AS final\n",
        ),
    ],
)
def test_pin_final_from_keeps_lines(text: str, expected_line: str) -> None:
    pinned = containerfile.pin_final_from(text, f"{BASE}@{DIGEST}")
    assert len(pinned.splitlines()) == len(text.splitlines())
    assert expected_line in pinned
