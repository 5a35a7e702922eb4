"""The layering lint (SPEC section 5): Repository + image -> findings LAY001..LAY011, each with
file, line and a message that says how to fix it. No I/O.

This module runs the rules and applies the waivers; the rules are in lint_rules.py (the
Containerfile's own: LAY001-LAY003, LAY008), lint_remote.py (LAY007), lint_packages.py
(LAY004, LAY005) and lint_commands.py (LAY009-LAY011), and LAY006 (repository configuration) is
here. The content rules (LAY101-LAY113) read the built image: content_rules.py. `Finding` lives in
lint_finding.py and is named here too, as `lint.Finding`.

Waivers: `allow:` in an image's image.yaml drops that image's findings of the waived rule from
`findings`; they are kept apart in `Report.waived` (the CLI counts them in its summary, JSON
output leaves them out). A waiver that matches nothing is itself reported (LAY006, warning) so
stale waivers do not outlive their reason; a content rule's waiver is not, as only the built
image shows whether it still matches (content_rules.check reports those).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pipeline.core import (
    containerfile,
    content_rules,
    lint_commands,
    lint_finding,
    lint_packages,
    lint_remote,
    lint_rules,
    repo,
)

# the finding type and severities, under the names callers use (lint.Finding, lint.ERROR)
Severity = lint_finding.Severity
Finding = lint_finding.Finding
ERROR = lint_finding.ERROR
WARNING = lint_finding.WARNING


@dataclass(frozen=True)
class Report(lint_finding.BySeverity):
    """Every finding of a lint run, the findings waived in image.yaml, and the images linted."""

    findings: tuple[Finding, ...]
    waived: tuple[Finding, ...] = ()
    images: tuple[str, ...] = field(default=())


def _sorted(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    unique = dict.fromkeys(findings)
    return tuple(sorted(unique, key=lambda f: (f.path, f.line or 0, f.id, f.message)))


def _in(image: repo.Image, path: str) -> bool:
    return path == image.directory or path.startswith(image.directory + "/")


def _problem_finding(problem: repo.Problem) -> Finding:
    message = f"{problem.field}: {problem.message}" if problem.field else problem.message
    return Finding("LAY006", ERROR, problem.path, problem.line, message)


def _image_findings(
    repository: repo.Repository,
    image: repo.Image,
    machineconfigs: Mapping[str, list[lint_packages.MachineConfig]],
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
    findings.extend(lint_rules.base_findings(image, parsed, clusters, all_clusters))
    findings.extend(lint_rules.pinning_findings(image, parsed))
    findings.extend(lint_rules.commit_findings(image, parsed))
    findings.extend(lint_packages.package_findings(image, parsed, clusters, machineconfigs))
    findings.extend(lint_remote.remote_findings(image, parsed))
    findings.extend(lint_rules.context_findings(image, parsed))
    findings.extend(lint_commands.command_findings(image, parsed))
    return findings


def _apply_waivers(
    image: repo.Image, findings: list[Finding]
) -> tuple[list[Finding], list[Finding]]:
    rules = {waiver.rule for waiver in image.settings.allow}
    kept = [f for f in findings if f.id not in rules]
    waived = [f for f in findings if f.id in rules]
    for waiver in image.settings.allow:
        if waiver.rule in content_rules.CONTENT_RULE_IDS:
            continue  # only the built image can show it matches nothing
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
    machineconfigs, findings = lint_packages.read_machineconfigs(repository)
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
    machineconfigs, _ = lint_packages.read_machineconfigs(repository)
    current = repository.images[name]
    kept, _ = _apply_waivers(current, _image_findings(repository, current, machineconfigs))
    return list(_sorted(kept))


def lint_repository(repository: repo.Repository, image: str | None = None) -> list[Finding]:
    """Every finding of the repository (or of one image plus repository-wide problems)."""
    return list(report(repository, image).findings)
