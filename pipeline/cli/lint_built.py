"""`layering lint --image NAME --built REF [--base REF] [--repo PATH] [--format text|json|github]`:
the content lint (LAY101..LAY113) of an image already in a registry, as a build runs it between
build and push. REF and its base are pulled into the configured buildah storage (and removed
again when they were not there before, adapters/layer_content.py), the layers REF adds are read
against the base and judged under images/NAME/image.yaml's `allow:` waivers
(flows/content_check.py), and the findings printed as `layering lint` prints them. The base is
--base, else read from the trusted side, the repository: the base of the clusters using NAME
(the one REF's org.opencontainers.image.base.name label names, when several do). REF's label
alone decides only when no cluster uses NAME, and the output says so: an image choosing the
base it is judged against could hide what it adds in a "base".

Exit codes as `layering lint`: 0 clean (warnings allowed), 1 on an error finding, 2 on unusable
input (no --image, an unknown image or a broken image.yaml, REF not in the registry, no base,
a registry that cannot be reached). Progress goes to stderr. Does I/O (skopeo, buildah)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from pipeline.adapters import buildah, environment, fs, layer_content, registry
from pipeline.cli import EXIT_FINDINGS, EXIT_OK
from pipeline.cli import lint as lint_cli
from pipeline.core import builds, repo, repo_limits
from pipeline.core.errors import InputError, PermanentError, TemporaryError
from pipeline.core.settings import Settings
from pipeline.flows import content_check


def run(args: argparse.Namespace) -> int:
    if args.built is None:
        raise InputError("--base needs --built REF: the pushed image to check against that base")
    if args.image is None:
        raise InputError(
            "--built needs --image NAME: the image whose images/NAME/image.yaml waivers apply"
        )
    settings = environment.load_settings()
    image = _image(settings, args.repo, args.image)
    err = Console(stderr=True, highlight=False, soft_wrap=True)

    def progress(line: str) -> None:
        err.print(line, markup=False)

    try:
        base = args.base or _base_of(settings, args.built, image, progress)
        config = buildah.config_of(settings)
        with (
            layer_content.pulled(config, args.built) as image_id,
            layer_content.pulled(config, base) as base_id,
        ):
            report = content_check.judge(
                image_id,
                base=base_id,
                allow=image[1].settings.allow,
                reader=layer_content.LayerReader(config),
                on_line=progress,
            )
    except (PermanentError, TemporaryError) as exc:
        # REF or its base could not be pulled or read: nothing was checked
        raise InputError(f"--built {args.built}: {exc}") from None
    for line in content_check.waiver_lines(report, image=args.image):
        progress(line)
    if args.format == "json":
        print(json.dumps([f.as_dict() for f in report.findings], indent=2))
    elif args.format == "github":
        # a path inside the image is no file of the repository: annotate the Containerfile
        where = f"images/{args.image}/Containerfile"
        for finding in report.findings:
            placed = dataclasses.replace(
                finding, path=where, line=None, message=f"{finding.path}: {finding.message}"
            )
            print(lint_cli.github_annotation(placed))
    else:
        lint_cli.print_findings(report.findings, f"{content_check.counts(report)} in {args.built}")
    return EXIT_FINDINGS if report.errors else EXIT_OK


def _image(settings: Settings, root: Path, name: str) -> tuple[repo.Repository, repo.Image]:
    """The repository and its image `name`; InputError when they cannot be read."""
    try:
        repository = fs.load(root, repo_limits.from_settings(settings))
    except OSError as exc:
        raise InputError(f"{exc.filename or root}: cannot read: {exc.strerror or exc}") from None
    found = repository.images.get(name)
    if found is None:
        known = ", ".join(sorted(repository.images)) or "none"
        raise InputError(f"--image {name!r}: no such image under images/ (known: {known})")
    problems = repository.problems_for(f"images/{name}/")
    if problems:
        raise InputError("; ".join(str(p) for p in problems) + "; fix them to read its waivers")
    return repository, found


def _base_of(
    settings: Settings,
    reference: str,
    image: tuple[repo.Repository, repo.Image],
    progress: Callable[[str], None],
) -> str:
    """The base `reference` is judged against: the base of the clusters using the image (the
    one its label names when several do), its label only when no cluster uses the image."""
    repository, found = image
    bases = sorted(
        {
            str(c.base_image.with_digest(c.base_digest))
            for c in repository.clusters_using(found.name)
        }
    )
    if len(bases) == 1:
        return bases[0]
    labelled = registry.Registry.from_settings(settings).image_of(reference)
    if labelled is None:
        raise InputError(f"--built {reference}: no such image in the registry")
    claimed = labelled.labels.get(builds.LABEL_BASE_NAME, "")
    if bases:
        if claimed in bases:
            return claimed
        raise InputError(
            f"--built {reference}: the clusters using images/{found.name} have bases "
            f"{', '.join(bases)} and the image's {builds.LABEL_BASE_NAME} label names "
            f"{claimed or 'none'}; name the one it was built on with --base REF"
        )
    if not claimed:
        raise InputError(
            f"--built {reference}: no cluster uses images/{found.name} and the image's config "
            f"has no {builds.LABEL_BASE_NAME} label; name the image it was built on with --base REF"
        )
    progress(
        f"no cluster uses images/{found.name}: judging against the base the image's own label "
        f"names ({claimed}); pass --base REF to choose it yourself"
    )
    return claimed
