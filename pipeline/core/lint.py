"""The layering lint (SPEC section 5): Repository + image -> findings LAY001..LAY008, each with
file, line and a message that says how to fix it. No I/O.

Waivers: `allow:` in an image's image.yaml drops that image's findings of the waived rule from
`findings`; they are kept apart in `Report.waived` (the CLI counts them in its summary, JSON
output leaves them out). A waiver that matches nothing is itself reported (LAY006, warning) so
stale waivers do not outlive their reason.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.core import containerfile, names, repo, yamlfile
from pipeline.core.containerfile import Containerfile, Instruction, Stage

Severity = Literal["error", "warning"]
ERROR: Severity = "error"
WARNING: Severity = "warning"

# MachineConfig extensions and the RPMs each installs, as the MCO defines them:
# openshift/machine-config-operator pkg/controller/common/helpers.go SupportedExtensions()
# (two-node-ha from the same package's tests of GetPackagesForSupportedExtensions).
EXTENSIONS: Mapping[str, tuple[str, ...]] = {
    "usbguard": ("usbguard",),
    "kerberos": ("krb5-workstation", "libkadm5"),
    "kernel-devel": ("kernel-devel", "kernel-headers"),
    "sandboxed-containers": ("kata-containers",),
    "sysstat": ("sysstat",),
    "ipsec": ("NetworkManager-libreswan", "libreswan"),
    "wasm": ("crun-wasm",),
    "two-node-ha": ("pacemaker", "pcs", "fence-agents-all"),
}
EXTENSION_OF_PACKAGE: Mapping[str, str] = {
    package: extension for extension, packages in EXTENSIONS.items() for package in packages
}
ROLE_LABEL = "machineconfiguration.openshift.io/role"
# Custom pools select the worker role's MachineConfigs as well as their own (the documented
# way to create a custom pool), so a worker MachineConfig reaches every pool but these.
_POOLS_WITHOUT_WORKER_CONFIG = {"master", "arbiter", "worker"}

_COMMIT_COMMANDS = (("ostree", "container", "commit"), ("bootc", "container", "lint"))
_CHECKSUM_TOOLS = {"sha224sum", "sha256sum", "sha384sum", "sha512sum", "b2sum"}
_FETCH_TOOLS = {"curl", "wget"}
_PIPE_TO_SHELL = re.compile(r"\|\s*(?:sudo\s+)?(?:/\S*/)?(?:ba|da|z|k)?sh\b")
_REMOTE = re.compile(r"^(?:https?|ftp)://", re.IGNORECASE)
_GIT_SOURCE = re.compile(r"(?:^git@|\.git(?:#|$))")
_COMMIT_REF = re.compile(r"#[0-9a-f]{40}(?::|$)")


@dataclass(frozen=True)
class Finding:
    id: str
    severity: Severity
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.id} {self.severity}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity,
            "path": self.path,
            "line": self.line,
            "message": self.message,
        }


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]
    waived: tuple[Finding, ...] = ()
    images: tuple[str, ...] = field(default=())

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]


def _sorted(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    unique = dict.fromkeys(findings)
    return tuple(sorted(unique, key=lambda f: (f.path, f.line or 0, f.id, f.message)))


def _short(digest: str) -> str:
    return f"{digest[:19]}…" if len(digest) > 19 else digest


def _in(image: repo.Image, path: str) -> bool:
    return path == image.directory or path.startswith(image.directory + "/")


# --- repository configuration (LAY006) ---------------------------------------------------------


def _problem_finding(problem: repo.Problem) -> Finding:
    message = f"{problem.field}: {problem.message}" if problem.field else problem.message
    return Finding("LAY006", ERROR, problem.path, problem.line, message)


@dataclass(frozen=True)
class _MachineConfig:
    path: str
    role: str
    extensions: tuple[str, ...]


def _machineconfigs(
    repository: repo.Repository,
) -> tuple[dict[str, list[_MachineConfig]], list[Finding]]:
    """cluster name -> its MachineConfigs (role and extensions), plus unreadable files."""
    by_cluster: dict[str, list[_MachineConfig]] = {}
    problems: list[Finding] = []
    for path, raw in sorted(repository.machineconfigs.items()):
        cluster = path.split("/")[1]
        try:
            document = yamlfile.load(raw)
        except yamlfile.YamlProblem as exc:
            problems.append(Finding("LAY006", ERROR, path, exc.line, str(exc)))
            continue
        if not isinstance(document, dict):
            problems.append(
                Finding("LAY006", ERROR, path, None, "must be one MachineConfig (a YAML mapping)")
            )
            continue
        metadata = document.get("metadata")
        labels = metadata.get("labels") if isinstance(metadata, dict) else None
        role = labels.get(ROLE_LABEL) if isinstance(labels, dict) else None
        spec = document.get("spec")
        extensions = spec.get("extensions") if isinstance(spec, dict) else None
        if not isinstance(role, str) or not isinstance(extensions, list):
            continue
        by_cluster.setdefault(cluster, []).append(
            _MachineConfig(path, role, tuple(str(e) for e in extensions))
        )
    return by_cluster, problems


def _applies_to(machineconfig: _MachineConfig, pool: str) -> bool:
    return machineconfig.role == pool or (
        machineconfig.role == "worker" and pool not in _POOLS_WITHOUT_WORKER_CONFIG
    )


# --- the Containerfile ---------------------------------------------------------------------------


def _lineage(parsed: Containerfile) -> list[Stage]:
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


def _is_stage_reference(parsed: Containerfile, stage: Stage, reference: str) -> bool:
    if reference.isdigit():
        return int(reference) < stage.index
    parent = parsed.stage_named(reference)
    return parent is not None and parent.index < stage.index


def _flags_and_arguments(instruction: Instruction) -> tuple[dict[str, str], list[str]]:
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
        except ValueError:
            decoded = None
        if isinstance(decoded, list):
            return flags, [str(word) for word in decoded]
    return flags, words


def _base_findings(
    image: repo.Image,
    parsed: Containerfile,
    clusters: list[repo.Cluster],
    all_clusters: list[repo.Cluster],
) -> Iterator[Finding]:
    """LAY001: the final stage's root FROM names each using cluster's base repository."""
    root = parsed.root_stage(parsed.final)
    path, line = image.containerfile_path, root.from_line
    use_variable = "ARG BASE_IMAGE + FROM ${BASE_IMAGE}"
    if root.image.lower() == "scratch":
        yield Finding(
            "LAY001",
            ERROR,
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
        yield Finding("LAY001", ERROR, path, line, f"FROM: {exc}; use {use_variable}")
        return
    if not clusters:
        known = sorted({c.base_image.repository for c in all_clusters})
        if known and ref.repository not in known:
            yield Finding(
                "LAY001",
                WARNING,
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
            yield Finding(
                "LAY001",
                WARNING,
                path,
                line,
                f"the default of {root.image} is {ref.repository}, but {noun} "
                f"{', '.join(cluster_names)} run {base_repository}; the pipeline builds on the "
                f"cluster's base anyway, but a local build would not: drop the default or "
                f"set it to {base_repository}",
            )
            continue
        yield Finding(
            "LAY001",
            ERROR,
            path,
            line,
            f"FROM {ref.repository} is not the base of {noun} {', '.join(cluster_names)} "
            f"({base_repository}); use {use_variable} or FROM {base_repository} without a "
            f"digest",
        )
    for digest, cluster_names in sorted(by_digest.items()):
        noun = "cluster" if len(cluster_names) == 1 else "clusters"
        yield Finding(
            "LAY001",
            ERROR,
            path,
            line,
            f"FROM pins {_short(ref.digest or '')}, but {noun} {', '.join(cluster_names)} "
            f"runs {_short(digest)}; drop the digest to build on the cluster's base",
        )


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


def _pinning_findings(image: repo.Image, parsed: Containerfile) -> Iterator[Finding]:
    """LAY002: every other stage's FROM, and COPY --from=<image>, pinned by digest."""
    path = image.containerfile_path
    exempt = {parsed.final.index, parsed.root_stage(parsed.final).index}
    for stage in parsed.stages:
        if stage.index not in exempt and stage.image.lower() != "scratch":
            target = stage.resolved if stage.resolved is not None else stage.image
            if not _is_stage_reference(parsed, stage, target):
                reason = _unpinned(stage.resolved, stage.image)
                if reason:
                    yield Finding("LAY002", ERROR, path, stage.from_line, f"FROM {reason}")
        for instruction in stage.instructions:
            if instruction.keyword not in ("COPY", "ADD"):
                continue
            source = _flags_and_arguments(instruction)[0].get("--from")
            if not source or _is_stage_reference(parsed, stage, source):
                continue
            resolved = containerfile.substitute(source, parsed.global_args)
            reason = _unpinned(resolved, source)
            if reason:
                yield Finding(
                    "LAY002", ERROR, path, instruction.line, f"COPY --from={source}: {reason}"
                )


def _ends_with_commit(run: Instruction) -> bool:
    commands = containerfile.commands(containerfile.run_argv_text(run))
    if not commands:
        return False
    last = commands[-1]
    words = (last[0].rsplit("/", 1)[-1], *last[1:3])
    return words in _COMMIT_COMMANDS


def _commit_findings(image: repo.Image, parsed: Containerfile) -> Iterator[Finding]:
    """LAY003: the last RUN the final image gets ends with ostree container commit."""
    path = image.containerfile_path
    runs = next((stage.runs for stage in _lineage(parsed) if stage.runs), [])
    if not runs:
        yield Finding(
            "LAY003",
            ERROR,
            path,
            parsed.final.from_line,
            "the final stage has no RUN; end it with `RUN ostree container commit` (or "
            "`RUN bootc container lint`) so /var and /tmp leftovers are cleaned and checked",
        )
        return
    last = runs[-1]
    if not _ends_with_commit(last):
        yield Finding(
            "LAY003",
            ERROR,
            path,
            last.line,
            "the last RUN of the final stage does not end with `ostree container commit` "
            "(or `bootc container lint`); append `&& ostree container commit` to it",
        )


def _package_findings(
    image: repo.Image,
    parsed: Containerfile,
    clusters: list[repo.Cluster],
    machineconfigs: Mapping[str, list[_MachineConfig]],
) -> Iterator[Finding]:
    """LAY004 realtime kernel and LAY005 MachineConfig extension RPMs in the shipped stages."""
    path = image.containerfile_path
    for stage in reversed(_lineage(parsed)):
        for install in containerfile.installs(stage):
            if install.action in ("override remove", "override reset"):
                continue
            for spec in install.packages:
                package = containerfile.package_name(spec)
                if package.startswith("kernel-rt"):
                    yield Finding(
                        "LAY004",
                        ERROR,
                        path,
                        install.line,
                        f"installs {package}: a realtime kernel as layered content conflicts "
                        f"with `kernelType: realtime` and the MCO degrades; remove it and set "
                        f"kernelType: realtime in a MachineConfig for the pool instead",
                    )
                extension = EXTENSION_OF_PACKAGE.get(package)
                if extension is not None:
                    yield _extension_finding(
                        image, path, install.line, package, extension, clusters, machineconfigs
                    )


def _extension_finding(
    image: repo.Image,
    path: str,
    line: int,
    package: str,
    extension: str,
    clusters: list[repo.Cluster],
    machineconfigs: Mapping[str, list[_MachineConfig]],
) -> Finding:
    conflicts = [
        f"{mc.path} (pool {pool})"
        for cluster in clusters
        for pool, assigned in sorted(cluster.pools.items())
        if assigned == image.name
        for mc in machineconfigs.get(cluster.name, [])
        if extension in mc.extensions and _applies_to(mc, pool)
    ]
    if conflicts:
        return Finding(
            "LAY005",
            ERROR,
            path,
            line,
            f"installs {package}, which the MachineConfig extension {extension!r} also "
            f"installs, and {', '.join(conflicts)} enables it: the MCO degrades on the "
            f"conflict; remove the package here or the extension there",
        )
    return Finding(
        "LAY005",
        WARNING,
        path,
        line,
        f"installs {package}, which the MCO also installs as the MachineConfig extension "
        f"{extension!r}; if a MachineConfig for this pool enables {extension!r}, the MCO "
        f"degrades: keep {extension!r} out of the pool's MachineConfigs, or drop the package "
        f"and enable the extension instead",
    )


def _remote_findings(image: repo.Image, parsed: Containerfile) -> Iterator[Finding]:
    """LAY007: ADD of URLs, package installs from URLs and downloads, without a checksum."""
    path = image.containerfile_path
    for stage in parsed.stages:
        for instruction in stage.instructions:
            if instruction.keyword == "ADD":
                yield from _add_findings(path, instruction)
            elif instruction.keyword == "RUN":
                yield from _run_remote_findings(path, instruction)


def _add_findings(path: str, instruction: Instruction) -> Iterator[Finding]:
    flags, arguments = _flags_and_arguments(instruction)
    for source in arguments[:-1]:
        if _GIT_SOURCE.search(source) or (source.startswith("git@")):
            if not _COMMIT_REF.search(source):
                yield Finding(
                    "LAY007",
                    ERROR,
                    path,
                    instruction.line,
                    f"ADD {source} follows a branch or tag; pin the commit: "
                    f"ADD <repository>.git#<40-hex commit>",
                )
        elif _REMOTE.match(source) and not flags.get("--checksum"):
            yield Finding(
                "LAY007",
                ERROR,
                path,
                instruction.line,
                f"ADD {source} is not pinned; add --checksum=sha256:<hex of the file>",
            )


def _run_remote_findings(path: str, run: Instruction) -> Iterator[Finding]:
    text = containerfile.run_argv_text(run)
    commands = containerfile.commands(text)
    fetched = False
    for index, argv in enumerate(commands):
        tool = argv[0].rsplit("/", 1)[-1]
        if tool in _FETCH_TOOLS and any("://" in w or "$" in w for w in argv[1:]):
            if _PIPE_TO_SHELL.search(text):
                yield Finding(
                    "LAY007",
                    ERROR,
                    path,
                    run.line,
                    f"pipes a {tool} download into a shell, unverified; download to a file, "
                    f"check it with `echo '<sha256>  <file>' | sha256sum -c`, then run it",
                )
                return
            later = commands[index + 1 :]
            if not any(_verifies(c) for c in later):
                fetched = True
    if fetched:
        yield Finding(
            "LAY007",
            ERROR,
            path,
            run.line,
            "downloads a file without checking it; follow the download with "
            "`echo '<sha256>  <file>' | sha256sum -c` in the same RUN",
        )
    for install in containerfile.run_installs(run):
        for spec in install.packages:
            if _REMOTE.match(spec):
                yield Finding(
                    "LAY007",
                    ERROR,
                    path,
                    run.line,
                    f"{install.tool} {install.action} {spec} installs straight from the "
                    f"network, unverified; download it (curl -fLo <file>), check it "
                    f"(`echo '<sha256>  <file>' | sha256sum -c`) and install the local file",
                )


def _verifies(argv: list[str]) -> bool:
    tool = argv[0].rsplit("/", 1)[-1]
    options = set(argv[1:])
    if tool in _CHECKSUM_TOOLS:
        return bool(options & {"-c", "--check"})
    if tool == "rpm":
        return bool(options & {"-K", "--checksig"})
    return tool == "gpgv" or (tool in ("gpg", "gpg2") and "--verify" in options)


def _context_findings(image: repo.Image, parsed: Containerfile) -> Iterator[Finding]:
    """LAY008: COPY/ADD sources stay inside images/<image>/ (the build context)."""
    path = image.containerfile_path
    for stage in parsed.stages:
        for instruction in stage.instructions:
            if instruction.keyword not in ("COPY", "ADD"):
                continue
            flags, arguments = _flags_and_arguments(instruction)
            if "--from" in flags:
                continue
            for source in arguments[:-1]:
                if "://" in source or source.startswith("git@") or "$" in source:
                    continue
                relative = posixpath.normpath(source.lstrip("/") or ".")
                if relative == ".." or relative.startswith("../"):
                    yield Finding(
                        "LAY008",
                        ERROR,
                        path,
                        instruction.line,
                        f"{instruction.keyword} {source} reaches outside the build context "
                        f"{image.directory}/; put the file in {image.directory}/ and copy it "
                        f"from there",
                    )
                elif source.startswith("/"):
                    yield Finding(
                        "LAY008",
                        WARNING,
                        path,
                        instruction.line,
                        f"{instruction.keyword} {source} is read from the build context "
                        f"({image.directory}/{relative}), not from the host; write it as "
                        f"{relative}",
                    )


def _image_findings(
    repository: repo.Repository,
    image: repo.Image,
    machineconfigs: Mapping[str, list[_MachineConfig]],
) -> list[Finding]:
    findings = [_problem_finding(p) for p in repository.problems if _in(image, p.path)]
    if "BASE_IMAGE" in image.settings.build_args:
        findings.append(
            Finding(
                "LAY006",
                WARNING,
                f"{image.directory}/{repo.IMAGE_SETTINGS}",
                None,
                "buildArgs.BASE_IMAGE: the pipeline sets BASE_IMAGE to each cluster's base "
                "image; remove it",
            )
        )
    if image.containerfile is None:
        return findings
    try:
        parsed = containerfile.parse(image.containerfile, image.settings.build_args)
    except containerfile.ContainerfileError as exc:
        findings.append(Finding("LAY006", ERROR, image.containerfile_path, exc.line, str(exc)))
        return findings
    clusters = repository.clusters_using(image.name)
    all_clusters = [c for _, c in sorted(repository.clusters.items())]
    findings.extend(_base_findings(image, parsed, clusters, all_clusters))
    findings.extend(_pinning_findings(image, parsed))
    findings.extend(_commit_findings(image, parsed))
    findings.extend(_package_findings(image, parsed, clusters, machineconfigs))
    findings.extend(_remote_findings(image, parsed))
    findings.extend(_context_findings(image, parsed))
    return findings


def _apply_waivers(
    image: repo.Image, findings: list[Finding]
) -> tuple[list[Finding], list[Finding]]:
    rules = {waiver.rule for waiver in image.settings.allow}
    kept = [f for f in findings if f.id not in rules]
    waived = [f for f in findings if f.id in rules]
    for waiver in image.settings.allow:
        if not any(f.id == waiver.rule for f in waived):
            kept.append(
                Finding(
                    "LAY006",
                    WARNING,
                    f"{image.directory}/{repo.IMAGE_SETTINGS}",
                    None,
                    f"allow: {waiver.rule} is waived but the image has no {waiver.rule} "
                    f"finding; remove the waiver",
                )
            )
    return kept, waived


def report(repository: repo.Repository, image: str | None = None) -> Report:
    """Findings for every image (or only `image`) plus repository-wide configuration problems
    (clusters/ and unreadable MachineConfigs), which affect every image's build."""
    if image is not None and image not in repository.images:
        raise KeyError(image)
    machineconfigs, findings = _machineconfigs(repository)
    images = sorted(repository.images) if image is None else [image]
    for problem in repository.problems:
        if any(_in(known, problem.path) for known in repository.images.values()):
            continue  # reported with its image below
        if image is None or not problem.path.startswith(f"{repo.IMAGES_DIR}/"):
            findings.append(_problem_finding(problem))
    waived: list[Finding] = []
    for name in images:
        current = repository.images[name]
        kept, dropped = _apply_waivers(
            current, _image_findings(repository, current, machineconfigs)
        )
        findings.extend(kept)
        waived.extend(dropped)
    return Report(_sorted(findings), _sorted(waived), tuple(images))


def lint_image(repository: repo.Repository, image: repo.Image | str) -> list[Finding]:
    """One image's findings (its Containerfile and image.yaml), waivers applied."""
    name = image if isinstance(image, str) else image.name
    machineconfigs, _ = _machineconfigs(repository)
    current = repository.images[name]
    kept, _ = _apply_waivers(current, _image_findings(repository, current, machineconfigs))
    return list(_sorted(kept))


def lint_repository(repository: repo.Repository, image: str | None = None) -> list[Finding]:
    """Every finding of the repository (or of one image plus repository-wide problems)."""
    return list(report(repository, image).findings)
