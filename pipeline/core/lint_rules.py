"""The Containerfile's own lint rules, one function per rule, each taking the image and its
parsed Containerfile and yielding findings: LAY001 (the final stage starts from the cluster's
base), LAY002 (every other image reference is pinned by digest), LAY003 (the shipped stages end
with `ostree container commit`) and LAY008 (COPY/ADD stay inside the build context). LAY007
(remote content is verified) is in lint_remote.py, the package rules (LAY004, LAY005) in
lint_packages.py. No I/O.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator

from pipeline.core import containerfile, lint_finding, names, repo

_COMMIT_COMMANDS = (("ostree", "container", "commit"), ("bootc", "container", "lint"))


def lineage(parsed: containerfile.Containerfile) -> list[containerfile.Stage]:
    """The final stage and the stages it is built FROM, final first: their content ships."""
    stages = [parsed.final]
    seen = {parsed.final.index}
    stage = parsed.final
    while stage.resolved is not None and (parent := parsed.stage_named(stage.resolved)):
        if parent.index >= stage.index or parent.index in seen:
            break
        stages.append(parent)
        seen.add(parent.index)
        stage = parent
    return stages


def _is_stage_reference(
    parsed: containerfile.Containerfile, stage: containerfile.Stage, reference: str
) -> bool:
    if reference.isdigit():
        return int(reference) < stage.index
    parent = parsed.stage_named(reference)
    return parent is not None and parent.index < stage.index


def flags_and_arguments(
    instruction: containerfile.Instruction,
) -> tuple[dict[str, str], list[str]]:
    """`COPY --from=x --chown=1:1 a b /dst` -> ({"--from": "x", ...}, ["a", "b", "/dst"])."""
    words = instruction.value.split()
    flags: dict[str, str] = {}
    while words and words[0].startswith("--"):
        name, _, value = words.pop(0).partition("=")
        flags[name.lower()] = value
    rest = " ".join(words)
    if rest.startswith("["):
        try:
            decoded = json.loads(rest)
        except (ValueError, RecursionError):  # not JSON, or nested past the recursion limit
            decoded = None
        if isinstance(decoded, list):
            return flags, [str(word) for word in decoded]
    return flags, words


def base_findings(
    image: repo.Image,
    parsed: containerfile.Containerfile,
    clusters: list[repo.Cluster],
    all_clusters: list[repo.Cluster],
) -> Iterator[lint_finding.Finding]:
    """LAY001: the final stage's root FROM names each using cluster's base repository."""
    root = parsed.root_stage(parsed.final)
    path, line = image.containerfile_path, root.from_line
    use_variable = "ARG BASE_IMAGE + FROM ${BASE_IMAGE}"
    if root.image.lower() == "scratch":
        yield lint_finding.Finding(
            "LAY001",
            lint_finding.ERROR,
            path,
            line,
            f"the final stage starts FROM scratch; a layered image must start from the "
            f"cluster's base image: use {use_variable}",
        )
        return
    if root.resolved is None:
        return  # a variable without a value: the pipeline pins it to each cluster's base
    from_variable = "$" in root.image
    try:
        ref = names.parse_image_ref(root.resolved)
    except ValueError as exc:
        yield lint_finding.Finding(
            "LAY001", lint_finding.ERROR, path, line, f"FROM: {exc}; use {use_variable}"
        )
        return
    if not clusters:
        known = sorted({c.base_image.repository for c in all_clusters})
        if known and ref.repository not in known:
            yield lint_finding.Finding(
                "LAY001",
                lint_finding.WARNING,
                path,
                line,
                f"FROM {ref.repository} is not the base repository of any cluster "
                f"({', '.join(known)}); no cluster uses this image yet, but before one does "
                f"use {use_variable}",
            )
        return
    by_repository: dict[str, list[str]] = {}
    by_digest: dict[str, list[str]] = {}
    for cluster in clusters:
        if ref.repository != cluster.base_image.repository:
            by_repository.setdefault(cluster.base_image.repository, []).append(cluster.name)
        elif ref.digest and ref.digest != cluster.base_digest and not from_variable:
            by_digest.setdefault(cluster.base_digest, []).append(cluster.name)
    for base_repository, cluster_names in sorted(by_repository.items()):
        noun = "cluster" if len(cluster_names) == 1 else "clusters"
        if from_variable:
            yield lint_finding.Finding(
                "LAY001",
                lint_finding.WARNING,
                path,
                line,
                f"the default of {root.image} is {ref.repository}, but {noun} "
                f"{', '.join(cluster_names)} run {base_repository}; the pipeline builds on the "
                f"cluster's base anyway, but a local build would not: drop the default or "
                f"set it to {base_repository}",
            )
            continue
        yield lint_finding.Finding(
            "LAY001",
            lint_finding.ERROR,
            path,
            line,
            f"FROM {ref.repository} is not the base of {noun} {', '.join(cluster_names)} "
            f"({base_repository}); use {use_variable} or FROM {base_repository} without a "
            f"digest",
        )
    for digest, cluster_names in sorted(by_digest.items()):
        noun = "cluster" if len(cluster_names) == 1 else "clusters"
        yield lint_finding.Finding(
            "LAY001",
            lint_finding.ERROR,
            path,
            line,
            f"FROM pins {_short(ref.digest or '')}, but {noun} {', '.join(cluster_names)} "
            f"runs {_short(digest)}; drop the digest to build on the cluster's base",
        )


def _short(digest: str) -> str:
    return f"{digest[:19]}…" if len(digest) > 19 else digest


def _unpinned(reference: str | None, written: str) -> str | None:
    """Why an image reference is not pinned by digest, or None when it is."""
    if reference is None:
        return (
            f"{written} has no value, so nothing pins it; give the ARG a default pinned by "
            f"digest (<image>@sha256:<64 hex>)"
        )
    try:
        ref = names.parse_image_ref(reference)
    except ValueError as exc:
        return f"{exc}; use <image>@sha256:<64 hex>"
    if ref.digest is None:
        return (
            f"{reference} is not pinned by digest; use {ref.repository}@sha256:<digest> "
            f"(`skopeo inspect docker://{reference}` shows it)"
        )
    return None


def pinning_findings(
    image: repo.Image, parsed: containerfile.Containerfile
) -> Iterator[lint_finding.Finding]:
    """LAY002: every other stage's FROM, and COPY --from=<image>, pinned by digest."""
    path = image.containerfile_path
    exempt = {parsed.final.index, parsed.root_stage(parsed.final).index}
    for stage in parsed.stages:
        if stage.index not in exempt and stage.image.lower() != "scratch":
            target = stage.resolved if stage.resolved is not None else stage.image
            if not _is_stage_reference(parsed, stage, target):
                reason = _unpinned(stage.resolved, stage.image)
                if reason:
                    yield lint_finding.Finding(
                        "LAY002", lint_finding.ERROR, path, stage.from_line, f"FROM {reason}"
                    )
        for instruction in stage.instructions:
            if instruction.keyword not in ("COPY", "ADD"):
                continue
            source = flags_and_arguments(instruction)[0].get("--from")
            if not source or _is_stage_reference(parsed, stage, source):
                continue
            resolved = containerfile.substitute(source, parsed.global_args)
            reason = _unpinned(resolved, source)
            if reason:
                yield lint_finding.Finding(
                    "LAY002",
                    lint_finding.ERROR,
                    path,
                    instruction.line,
                    f"COPY --from={source}: {reason}",
                )


def _ends_with_commit(run: containerfile.Instruction) -> bool:
    commands = containerfile.commands(containerfile.run_argv_text(run))
    if not commands:
        return False
    last = commands[-1]
    words = (last[0].rsplit("/", 1)[-1], *last[1:3])
    return words in _COMMIT_COMMANDS


def commit_findings(
    image: repo.Image, parsed: containerfile.Containerfile
) -> Iterator[lint_finding.Finding]:
    """LAY003: the last RUN the final image gets ends with ostree container commit."""
    path = image.containerfile_path
    runs = next((stage.runs for stage in lineage(parsed) if stage.runs), [])
    if not runs:
        yield lint_finding.Finding(
            "LAY003",
            lint_finding.ERROR,
            path,
            parsed.final.from_line,
            "the final stage has no RUN; end it with `RUN ostree container commit` (or "
            "`RUN bootc container lint`) so /var and /tmp leftovers are cleaned and checked",
        )
        return
    last = runs[-1]
    if not _ends_with_commit(last):
        yield lint_finding.Finding(
            "LAY003",
            lint_finding.ERROR,
            path,
            last.line,
            "the last RUN of the final stage does not end with `ostree container commit` "
            "(or `bootc container lint`); append `&& ostree container commit` to it",
        )


def context_findings(
    image: repo.Image, parsed: containerfile.Containerfile
) -> Iterator[lint_finding.Finding]:
    """LAY008: COPY/ADD sources stay inside images/<image>/ (the build context)."""
    path = image.containerfile_path
    for stage in parsed.stages:
        for instruction in stage.instructions:
            if instruction.keyword not in ("COPY", "ADD"):
                continue
            flags, arguments = flags_and_arguments(instruction)
            if "--from" in flags:
                continue
            for source in arguments[:-1]:
                if "://" in source or source.startswith("git@") or "$" in source:
                    continue
                relative = posixpath.normpath(source.lstrip("/") or ".")
                if relative == ".." or relative.startswith("../"):
                    yield lint_finding.Finding(
                        "LAY008",
                        lint_finding.ERROR,
                        path,
                        instruction.line,
                        f"{instruction.keyword} {source} reaches outside the build context "
                        f"{image.directory}/; put the file in {image.directory}/ and copy it "
                        f"from there",
                    )
                elif source.startswith("/"):
                    yield lint_finding.Finding(
                        "LAY008",
                        lint_finding.WARNING,
                        path,
                        instruction.line,
                        f"{instruction.keyword} {source} is read from the build context "
                        f"({image.directory}/{relative}), not from the host; write it as "
                        f"{relative}",
                    )
