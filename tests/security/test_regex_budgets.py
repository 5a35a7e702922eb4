"""Finding 2: every regular expression (and the parsers built on them) that runs over
repository text is linear-time. Each case feeds one adversarial 128 KiB input, shaped to make a
backtracking pattern retry from every position, to the function that applies the pattern, and
must finish within a second (generous on a noisy 2-core machine: the linear versions take a few
milliseconds; the quadratic pipe-to-shell pattern took 12.8 s on 64 KB).

The one timed assert of the suite, as the issue asks for it: an algorithmic-complexity guard,
measured as the CPU time (time.process_time) of the call."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from pipeline.adapters import git_trees
from pipeline.core import (
    containerfile,
    deliveries,
    lint_remote,
    lint_rules,
    names,
    promotion_commit,
    repo,
    repo_schema,
    yamlfile,
)

SIZE = 128 * 1024
BUDGET_SECONDS = 1.0
DIGEST = "sha256:" + "1" * 64


def fill(unit: str, size: int = SIZE) -> str:
    """`unit` repeated to exactly `size` characters."""
    return (unit * (size // len(unit) + 1))[:size]


def _substitute(text: str) -> object:
    return containerfile.substitute(text, {"A": "x"})


def _run_text(text: str) -> object:
    return containerfile.run_argv_text(containerfile.Instruction("RUN", text, 2, 2))


def _remote_findings(run: str) -> object:
    """LAY007 over one RUN line: the pipe-to-shell check, the fetch and install checks."""
    text = f"FROM quay.io/a/b@{DIGEST}\nRUN {run}\n"
    image = repo.Image("demo", text)
    return list(lint_remote.remote_findings(image, containerfile.parse(text)))


def _add_findings(source: str) -> object:
    """LAY007 and LAY008 over one ADD source: the remote, Git source and commit checks."""
    text = f"FROM quay.io/a/b@{DIGEST}\nADD {source} /dst\n"
    image = repo.Image("demo", text)
    parsed = containerfile.parse(text)
    return [
        *lint_remote.remote_findings(image, parsed),
        *lint_rules.context_findings(image, parsed),
    ]


def _copy_from(source: str) -> object:
    """LAY002 over COPY --from=<image>: substitution and image reference parsing."""
    text = f"FROM quay.io/a/b@{DIGEST}\nCOPY --from={source} /a /b\n"
    image = repo.Image("demo", text)
    return list(lint_rules.pinning_findings(image, containerfile.parse(text)))


def _image_ref(text: str) -> object:
    try:
        return names.parse_image_ref(text)
    except ValueError as exc:
        return exc


def _duration(text: str) -> object:
    try:
        return repo_schema.duration_seconds(text)
    except ValueError as exc:
        return exc


def _cluster_yaml(field: str, value: str) -> Callable[[str], object]:
    """cluster.yaml with one field set to the adversarial text (quoted), parsed and validated."""

    def parse(text: str) -> object:
        fields = {
            "environment": "nonprod",
            "baseImage": f"quay.io/a/b@{DIGEST}",
            "registry": "registry.example.com/layering",
            "soak": "0s",
        }
        fields[field] = value.replace("TEXT", text)
        raw = "".join(f"{key}: '{val}'\n" for key, val in fields.items())
        return repo.parse_files({"clusters/c/cluster.yaml": raw.encode()}).problems

    return parse


def _build_arg_name(text: str) -> object:
    raw = f"buildArgs:\n  '{text}': x\n".encode()
    return repo.parse_files(
        {"images/demo/Containerfile": b"FROM x\n", "images/demo/image.yaml": raw}
    ).problems


def _yaml_scalar(text: str) -> object:
    try:
        return yamlfile.load(f"key: {text}\n")
    except yamlfile.YamlProblem as exc:
        return exc


def _containerfile(text: str) -> object:
    try:
        return containerfile.parse(text)
    except containerfile.ContainerfileError as exc:
        return exc


def _tree(data: str) -> object:
    return git_trees.tree_entries(data.encode("latin-1"))


def _delivery(value: str) -> object:
    return deliveries.delivery_key(
        {deliveries.DELIVERY_HEADER: value, deliveries.HOOK_ID_HEADER: "1" + value}
    )


def _sha(value: str) -> object:
    payload = {
        "ref": "refs/heads/main",
        "before": value,
        "after": value,
        "repository": {"full_name": "acme/gitops"},
    }
    return deliveries.parse("push", json.dumps(payload).encode())


CASES: dict[str, tuple[Callable[[str], object], str]] = {
    # Containerfile variables: ${A:- without its closing brace retried the modifier to the end
    # from every `$`
    "substitute ${A:- unclosed": (_substitute, fill("${A:-")),
    "substitute ${A:+ unclosed": (_substitute, fill("${A:+")),
    "substitute $ only": (_substitute, fill("$")),
    "substitute ${ name unclosed": (_substitute, "${" + fill("A")),
    "substitute $A$A": (_substitute, fill("$A")),
    "substitute ${A}": (_substitute, fill("${A}")),
    "substitute ${A:-}}": (_substitute, fill("${A:-}}")),
    # RUN flags and words
    "run flags --mount=x": (_run_text, fill("--mount=x ")),
    "run flag value": (_run_text, "--mount=" + fill("x")),
    "run flag blanks": (_run_text, "--network" + fill(" ")),
    "run exec form": (_run_text, "[" + fill('"a",')),
    "run exec form nested": (_run_text, fill("[")),
    "commands assignments": (containerfile.commands, fill("A=")),
    "commands separators": (containerfile.commands, fill("a | ")),
    "commands quotes": (containerfile.commands, fill("'a")),
    "commands comment": (containerfile.commands, fill("\\'#")),
    # the pipe-to-shell check (LAY007): `|/|/|/...` retried a path to the end from every `|`
    "pipe to shell |/": (lint_remote.pipes_to_shell, "curl https://x " + fill("|/")),
    "pipe to shell | /": (lint_remote.pipes_to_shell, "curl https://x |" + fill("/")),
    "pipe to shell |sudo": (lint_remote.pipes_to_shell, "curl https://x " + fill("| sudo ")),
    "pipe to shell //sh": (lint_remote.pipes_to_shell, "curl https://x | " + fill("/sh")),
    "pipe to shell spaces": (lint_remote.pipes_to_shell, "curl https://x |" + fill(" ") + "sh"),
    "pipe to shell ||": (lint_remote.pipes_to_shell, "curl https://x " + fill("||")),
    "pipe to shell in the lint": (_remote_findings, "curl https://x " + fill("| /x ")),
    "remote install": (_remote_findings, "rpm-ostree install " + fill("https://a-1.rpm ")),
    # ADD sources
    "add git source": (_add_findings, fill(".git")),
    "add commit ref": (_add_findings, "x.git" + fill("#" + "a" * 39)),
    "add remote": (_add_findings, "https://" + fill("x")),
    "add outside context": (_add_findings, fill("../")),
    "add exec form nested": (_add_findings, fill("[")),
    "copy --from variables": (_copy_from, fill("${A:-")),
    "copy --from reference": (_copy_from, fill("a.") + "!"),
    # package names (NEVRA)
    "package a-": (containerfile.package_name, fill("a-")),
    "package a-1.": (containerfile.package_name, fill("a-1.") + ".rpm!"),
    "package -1:": (containerfile.package_name, fill("-1:")),
    "package dots": (containerfile.package_name, "a-1-" + fill("1.") + "rpm"),
    # image references and names
    "image ref a.": (_image_ref, fill("a.") + "!"),
    "image ref a-": (_image_ref, fill("a-") + "!"),
    "image ref a/": (_image_ref, fill("a/") + "!"),
    "image ref a__": (_image_ref, fill("a__") + "!"),
    "image ref host": (_image_ref, fill("A.") + "/a!"),
    "image ref port": (_image_ref, "a:" + fill("1") + "/a!"),
    "image ref tag": (_image_ref, "a:" + fill("a")),
    "image ref digest": (_image_ref, "a@sha256:" + fill("a")),
    "dns label": (names.is_dns_label, fill("a-")),
    "digest": (names.is_digest, "sha256:" + fill("a")),
    # YAML-derived strings
    "duration digits": (_duration, fill("1") + "x"),
    "duration units": (_duration, fill("1d1h") + "x"),
    "cluster soak": (_cluster_yaml("soak", "TEXT"), fill("1") + "x"),
    "cluster baseImage": (_cluster_yaml("baseImage", "TEXT"), fill("a.") + "!"),
    "cluster registry": (_cluster_yaml("registry", "TEXT"), fill("a-") + "!"),
    "cluster environment": (_cluster_yaml("environment", "TEXT"), fill("a-") + "!"),
    "build arg name": (_build_arg_name, fill("A") + "-"),
    # the YAML resolver's implicit types (int, float, timestamp) over plain scalars
    "yaml sexagesimal int": (_yaml_scalar, "1" + fill(":1")),
    "yaml sexagesimal float": (_yaml_scalar, "1" + fill(":1") + ".5"),
    "yaml long int": (_yaml_scalar, fill("1")),
    "yaml float": (_yaml_scalar, "1." + fill("1") + "e"),
    "yaml timestamp": (_yaml_scalar, "2001-12-14 21:59:43." + fill("0") + "x"),
    "yaml underscores": (_yaml_scalar, "0b" + fill("_")),
    # dockerfile-parse's line patterns
    "containerfile continuation": (_containerfile, "FROM x\nRUN " + fill("a \\\n")),
    "containerfile backslashes": (_containerfile, "FROM x\nRUN " + fill("\\ ")),
    "containerfile blanks": (_containerfile, "FROM x\nRUN a" + fill(" ") + "b\n"),
    "containerfile comments": (_containerfile, fill("# escape=\\ \n")),
    "containerfile keyword": (_containerfile, fill("R")),
    "containerfile FROM words": (_containerfile, "FROM " + fill("a ")),
    # raw Git tree objects (a hostile pusher can write any tree to a plain Git server)
    "git tree zeros": (_tree, fill("0")),
    "git tree modes": (_tree, fill("100644 ")),
    "git tree names without NUL": (_tree, fill("100644 " + "a" * 100)),
    "git tree entries": (_tree, fill("100644 a\0" + "x" * 20)),
    # commit messages of env/<environment> branches (a pull request's merge writes them)
    "commit trailer blanks": (promotion_commit.trailers, "Layering-Image: a" + fill(" ") + "b"),
    "commit trailer keys": (promotion_commit.trailers, fill("a-") + ":"),
    # webhook headers and shas
    "delivery header": (_delivery, fill("a")),
    "payload sha": (_sha, fill("a")),
}


@pytest.mark.parametrize(("call", "text"), CASES.values(), ids=CASES.keys())
def test_finishes_within_a_second(call: Callable[[str], object], text: str) -> None:
    assert len(text) >= SIZE
    # CPU time of this process, not wall time: other processes on a busy machine (parallel
    # test workers) cannot make a linear pattern look slow
    started = time.process_time()
    call(text)
    elapsed = time.process_time() - started
    assert elapsed < BUDGET_SECONDS, f"took {elapsed:.2f} s of CPU on {len(text)} characters"


@pytest.mark.parametrize(
    ("check", "text"),
    [
        (names.is_dns_label, "firewalld\n"),
        (names.is_digest, DIGEST + "\n"),
        (_image_ref, f"quay.io/a/b@{DIGEST}\n"),
        (_image_ref, "quay.io/a/b:tag\n"),
        (_image_ref, "quay.io/a/b\n"),
    ],
)
def test_patterns_do_not_accept_a_trailing_newline(
    check: Callable[[str], object], text: str
) -> None:
    """`$` also matches before a final newline: a name or digest ending in one must not pass
    (an image directory named `firewalld\\n` would become a path and a tag)."""
    result = check(text)
    assert result is False or isinstance(result, ValueError), result


def test_payload_sha_with_a_newline_is_rejected() -> None:
    """A commit id is later one line of `git cat-file --batch`: a newline must not pass."""
    assert isinstance(_sha("a" * 40 + "\n"), deliveries.Rejection)
    assert isinstance(_delivery("abc\ndef"), deliveries.Rejection)
