"""The package lint rules: LAY004 (no realtime kernel as layered content) and LAY005 (an RPM
that a MachineConfig extension also installs), read from the packages the shipped stages
install and the clusters' MachineConfigs. Also reads those MachineConfigs (an unreadable one is
a LAY006 finding). No I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from pipeline.core import containerfile, lint_finding, lint_rules, repo, yamlfile

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


@dataclass(frozen=True)
class MachineConfig:
    """What LAY005 needs of one MachineConfig file: the role it selects and its extensions."""

    path: str
    role: str
    extensions: tuple[str, ...]


def read_machineconfigs(
    repository: repo.Repository,
) -> tuple[dict[str, list[MachineConfig]], list[lint_finding.Finding]]:
    """cluster name -> its MachineConfigs (role and extensions), plus unreadable files."""
    by_cluster: dict[str, list[MachineConfig]] = {}
    problems: list[lint_finding.Finding] = []
    for path, raw in sorted(repository.machineconfigs.items()):
        cluster = path.split("/")[1]
        try:
            document = yamlfile.load(raw)
        except yamlfile.YamlProblem as exc:
            problems.append(
                lint_finding.Finding("LAY006", lint_finding.ERROR, path, exc.line, str(exc))
            )
            continue
        if not isinstance(document, dict):
            problems.append(
                lint_finding.Finding(
                    "LAY006",
                    lint_finding.ERROR,
                    path,
                    None,
                    "must be one MachineConfig (a YAML mapping)",
                )
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
            MachineConfig(path, role, tuple(str(e) for e in extensions))
        )
    return by_cluster, problems


def _applies_to(machineconfig: MachineConfig, pool: str) -> bool:
    return machineconfig.role == pool or (
        machineconfig.role == "worker" and pool not in _POOLS_WITHOUT_WORKER_CONFIG
    )


def package_findings(
    image: repo.Image,
    parsed: containerfile.Containerfile,
    clusters: list[repo.Cluster],
    machineconfigs: Mapping[str, list[MachineConfig]],
) -> Iterator[lint_finding.Finding]:
    """LAY004 realtime kernel and LAY005 MachineConfig extension RPMs in the shipped stages."""
    path = image.containerfile_path
    for stage in reversed(lint_rules.lineage(parsed)):
        for install in containerfile.installs(stage):
            if install.action in ("override remove", "override reset"):
                continue
            for spec in install.packages:
                package = containerfile.package_name(spec)
                if package.startswith("kernel-rt"):
                    yield lint_finding.Finding(
                        "LAY004",
                        lint_finding.ERROR,
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
    machineconfigs: Mapping[str, list[MachineConfig]],
) -> lint_finding.Finding:
    conflicts = [
        f"{mc.path} (pool {pool})"
        for cluster in clusters
        for pool, assigned in sorted(cluster.pools.items())
        if assigned == image.name
        for mc in machineconfigs.get(cluster.name, [])
        if extension in mc.extensions and _applies_to(mc, pool)
    ]
    if conflicts:
        return lint_finding.Finding(
            "LAY005",
            lint_finding.ERROR,
            path,
            line,
            f"installs {package}, which the MachineConfig extension {extension!r} also "
            f"installs, and {', '.join(conflicts)} enables it: the MCO degrades on the "
            f"conflict; remove the package here or the extension there",
        )
    return lint_finding.Finding(
        "LAY005",
        lint_finding.WARNING,
        path,
        line,
        f"installs {package}, which the MCO also installs as the MachineConfig extension "
        f"{extension!r}; if a MachineConfig for this pool enables {extension!r}, the MCO "
        f"degrades: keep {extension!r} out of the pool's MachineConfigs, or drop the package "
        f"and enable the extension instead",
    )
