"""Size caps of the watched repository's files, by kind: a Containerfile, and the YAML files
(cluster.yaml, image.yaml, MachineConfigs). A fork's pull request is read before anyone approves
it, so every file is bounded before it is read or parsed: the adapters compare the size they
`stat` (or that Git reports) with the cap and leave an oversized file unread, and repo.parse
checks the bytes it is given again. No I/O.

Why these defaults: real Containerfiles and cluster files are a few KiB; 256 KiB keeps the
slowest parse of a file at its cap well under a second (dockerfile-parse joins continuation
lines in quadratic time: a 1 MiB Containerfile of continuation lines took 8 s, 256 KiB 0.45 s).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core import settings as settings_module

KiB = 1024
CONTAINERFILE_SETTING = "LAYERING_REPO_CONTAINERFILE_MAX_BYTES"
YAML_SETTING = "LAYERING_REPO_YAML_MAX_BYTES"


@dataclass(frozen=True)
class FileCaps:
    """The largest file, in bytes, the pipeline reads of each kind."""

    containerfile: int = 256 * KiB
    yaml: int = 256 * KiB

    def cap_for(self, path: str) -> int:
        """The cap of the file at `path` (a repository path such as images/x/Containerfile)."""
        return self.containerfile if _is_containerfile(path) else self.yaml


DEFAULT_CAPS = FileCaps()


def from_settings(settings: settings_module.Settings) -> FileCaps:
    return FileCaps(
        containerfile=settings.repo_containerfile_max_bytes, yaml=settings.repo_yaml_max_bytes
    )


def _is_containerfile(path: str) -> bool:
    return path.rsplit("/", 1)[-1] == "Containerfile"


def oversize_message(path: str, size: int, caps: FileCaps) -> str:
    """What to say about a file of `size` bytes over its cap (the path is said by the caller)."""
    if _is_containerfile(path):
        kind, setting = "a Containerfile", CONTAINERFILE_SETTING
    else:
        kind, setting = "a YAML file", YAML_SETTING
    return (
        f"is {size} bytes, more than the {caps.cap_for(path)} allowed for {kind} ({setting}); "
        f"make it smaller or raise the setting"
    )
