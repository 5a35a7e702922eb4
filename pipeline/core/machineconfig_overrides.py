"""MachineConfigs that would decide a pool's OS image instead of the pipeline (issue 10): under
`clusters/<cluster>/machineconfigs/`, any file other than the pipeline's own
(`99-layering-<pool>-os-image.yaml`, the name it writes) that sets `osImageURL`, reuses one of
the pipeline's names, or cannot be read at all. The MCO merges every MachineConfig of a pool
and keeps the last `osImageURL` by name, so one hand-written file sorting after ours would boot
an image nobody verified. No I/O: promotion.plan refuses what this finds.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.core import repo, yamlfile

OS_IMAGE_KEY = "osimageurl"  # compared case-folded: decoders differ on key case


@dataclass(frozen=True)
class Override:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def found(repository: repo.Repository, cluster: str, *, ours: Collection[str]) -> list[Override]:
    """Every file of `cluster`'s machineconfigs/ that is not one of `ours` (the paths the
    pipeline writes or removes) and would set or shadow a pool's OS image."""
    prefix = f"{repo.CLUSTERS_DIR}/{cluster}/{repo.MACHINECONFIGS_DIR}/"
    our_names = {_stem(path) for path in ours}
    overrides: list[Override] = []
    for path, raw in sorted(repository.machineconfigs.items()):
        if not path.startswith(prefix) or path in ours:
            continue
        reason = _reason(raw, our_names, fallback_name=_stem(path))
        if reason:
            overrides.append(Override(path, reason))
    return overrides


def _reason(raw: bytes, our_names: Collection[str], *, fallback_name: str) -> str:
    try:
        document = yamlfile.load(raw)
    except yamlfile.YamlProblem as exc:
        where = f" (line {exc.line})" if exc.line else ""
        return (
            f"cannot be read{where}: {exc}; a MachineConfig here must be one plain YAML "
            "document, so that what it sets can be checked"
        )
    name = _name(document) or fallback_name
    if name in our_names:
        return f"is named {name}, like the pipeline's own MachineConfig; rename or remove it"
    if not any(key.casefold() == OS_IMAGE_KEY for key in _keys(document)):
        return ""
    later = sorted(ours_name for ours_name in our_names if name > ours_name)
    if later:
        return (
            f"sets osImageURL and sorts after {later[0]}, so the MCO would boot it instead of "
            "the promoted image; remove it (images/ and cluster.yaml choose pool images)"
        )
    return (
        "sets osImageURL, which only the pipeline's 99-layering-<pool>-os-image may set; "
        "remove it (images/ and cluster.yaml choose pool images)"
    )


def _name(document: Any) -> str:
    if not isinstance(document, dict):
        return ""
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else ""


def _keys(document: Any) -> Iterator[str]:
    """Every mapping key anywhere in the document (a List's items, nested specs)."""
    pending = [document]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str):
                    yield key
                pending.append(value)
        elif isinstance(node, list):
            pending.extend(node)


def _stem(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    for suffix in (".yaml", ".yml", ".json"):
        name = name.removesuffix(suffix)
    return name
