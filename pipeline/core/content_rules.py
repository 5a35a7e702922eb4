"""The content lint (LAY101..LAY113): what a built image holds that a node cannot use or should
not get, read from its root filesystem between `buildah build` and the push (flows/content_check)
and by `layering lint --built`. `findings` runs the rules, `check` applies image.yaml's `allow:`
waivers. No I/O: core/content_lint.py is what the rules read. Many paths of one rule are
grouped by directory (at most MAX_GROUPS findings a rule, each naming SHOWN paths and the
count): 100,000 files added under /var give a few findings, and each rule is one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from pipeline.core import content_lint, image_changes, lint_finding, repo_schema, rpm_packages
from pipeline.core.file_index import FileEntry
from pipeline.core.lint_finding import ERROR, WARNING, Finding, Severity

CONTENT_RULE_IDS: tuple[str, ...] = tuple(f"LAY{n}" for n in range(101, 114))
SHOWN = 5  # paths named in one finding
MAX_GROUPS = 10  # findings of one rule; the rest are counted in one more
RPM_DATABASE = "/usr/share/rpm"
_CREDENTIAL_TREES = ("/etc/pki/entitlement", "/etc/pki/entitlement-host", "/etc/pki/consumer")
_CREDENTIAL_ENDINGS = ("/.docker/config.json", "/containers/auth.json")
_CREDENTIAL_NAMES = {".netrc", ".git-credentials", "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519"}
_ENTITLEMENT_FILES = {"/etc/yum.repos.d/redhat.repo"}
_RUNTIME_TREES = ("/var/log", "/var/run", "/run", "/tmp")  # noqa: S108 (LAY107's trees)


def _under(path: str, root: str) -> bool:
    return path.startswith(root + "/")


def _top(path: str, depth: int) -> str:
    """The first `depth` components of an absolute path: _top("/var/lib/a/b", 3) = /var/lib/a."""
    return "/" + "/".join(path.split("/", depth + 1)[1 : depth + 1])


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _listing(paths: Sequence[str]) -> str:
    shown = sorted(paths)[:SHOWN]
    tail = f", … ({len(paths)} paths)" if len(paths) > SHOWN else ""
    return ", ".join(shown) + tail


def _grouped(
    rule: str, severity: Severity, paths: Iterable[str], key: Callable[[str], str], message: str
) -> list[Finding]:
    """One finding per group of paths (at most MAX_GROUPS, then one for the rest); `message`
    says what is wrong and how to fix it, with `{listed}` for the paths ("a, b, … (12 paths)")."""
    groups: dict[str, list[str]] = {}
    for path in paths:
        groups.setdefault(key(path), []).append(path)
    ordered = sorted(groups.items())
    found = [
        Finding(rule, severity, group, None, message.format(listed=_listing(members)))
        for group, members in ordered[:MAX_GROUPS]
    ]
    if len(ordered) > MAX_GROUPS:
        rest = [path for _, members in ordered[MAX_GROUPS:] for path in members]
        listed = f"{len(ordered) - MAX_GROUPS} more places: {_listing(rest)}"
        found.append(
            Finding(rule, severity, ordered[MAX_GROUPS][0], None, message.format(listed=listed))
        )
    return found


def kernels(tree: content_lint.Tree) -> list[str]:
    """The kernel versions of a tree: /usr/lib/modules/<version> holding a vmlinuz."""
    prefix = "/usr/lib/modules/"
    return [
        path[len(prefix) :]
        for path in tree.children("/usr/lib/modules")
        if f"{path}/vmlinuz" in tree
    ]


def findings(content: content_lint.ImageContent) -> list[Finding]:
    """Every content finding of a built image, unsorted and unwaived (`check` does both)."""
    final = content_lint.Tree(content)
    base = content_lint.Tree(
        content_lint.ImageContent(content.base, (), base_children=content.base_children)
    )
    new = content_lint.added(content, final)
    bad_names = [path for path in content_lint.not_utf8(content) if path in final]
    return [
        *_tree_findings(final, base),
        *_added_findings(new, content.base),
        # bootc lints.rs `utf8`: a name that is not UTF-8 cannot be deployed (ostree refuses it)
        *_grouped("LAY110", ERROR, bad_names, _parent, _NOT_UTF8),
        *_packages(content),
    ]


_NOT_UTF8 = (
    "file names that are not UTF-8 ({listed}; shown escaped); the node cannot deploy them: "
    "rename them to UTF-8 in the RUN that writes them"
)


def _tree_findings(final: content_lint.Tree, base: content_lint.Tree) -> Iterator[Finding]:
    # bootc lints.rs `var-run`: /var/run must be the link to /run the base ships (an absent
    # one is an error there too), or what is written to /var/run is lost at every boot
    var_run = final.get("/var/run")
    if var_run is None or var_run.kind != "link" or var_run.target not in _RUN_TARGETS:
        what = "missing" if var_run is None else f"a {var_run.kind} {var_run.target}".rstrip()
        yield Finding(
            "LAY101",
            ERROR,
            "/var/run",
            None,
            f"is {what}, not a symbolic link to /run; do not create or remove /var/run in the "
            f"Containerfile (the base has /var/run -> ../run) and create runtime files at boot "
            f"with a tmpfiles.d entry under /run",
        )
    # bootc lints.rs `etc-usretc`: ostree keeps the default /etc in /usr/etc; both is ambiguous
    if "/etc" in final and "/usr/etc" in final:
        yield Finding(
            "LAY102",
            ERROR,
            "/usr/etc",
            None,
            "exists next to /etc; write configuration to /etc in the Containerfile (ostree "
            "container commit moves it where the node reads it) and remove /usr/etc",
        )
    built, before = kernels(final), kernels(base)
    # bootc lints.rs `kernel`: a bootable image holds exactly one kernel
    if len(built) > 1:
        yield Finding(
            "LAY103",
            ERROR,
            "/usr/lib/modules",
            None,
            f"holds {len(built)} kernels ({', '.join(built)}); the node boots one: remove the "
            f"others' packages in the RUN that installs the kernel",
        )
    # MCO: the node boots the image's kernel, so a kernel change bypasses MachineConfig
    # kernelType/extensions and leaves the cluster's kernel updates behind
    if built != before:
        yield Finding(
            "LAY104",
            WARNING,
            "/usr/lib/modules",
            None,
            f"the image's kernel is {', '.join(built) or 'none'}, the base's is "
            f"{', '.join(before) or 'none'}; nodes boot this kernel and no longer follow the "
            f"cluster's: keep the base's kernel and set kernelType or extensions in a "
            f"MachineConfig, or waive LAY104 with the reason",
        )
    boot = final.below("/boot", limit=1000)
    # bootc lints.rs `nonempty-boot`: /boot is the node's boot partition, not deployed content
    if boot:
        yield Finding(
            "LAY109",
            WARNING,
            "/boot",
            None,
            f"is not empty ({_listing(boot)}); the node's /boot is managed by rpm-ostree and "
            f"never takes the image's: remove them in the Containerfile (kernels belong in "
            f"/usr/lib/modules/<version>/)",
        )


_RUN_TARGETS = ("/run", "../run", "/run/", "../run/")
_KARGS = "/usr/lib/bootc/kargs.d"
_INJECTED = ("/etc/hostname", "/etc/resolv.conf")
# (rule, severity, which added paths, their group, the message with {listed})
_ADDED_RULES: tuple[
    tuple[str, Severity, Callable[[str, FileEntry], bool], Callable[[str], str], str], ...
] = (
    # the MCO sets kernel arguments from MachineConfig kernelArguments (rpm-ostree kargs) and
    # ignores the image's; bootc lints.rs `bootc-kargs` checks the same files
    (
        "LAY105",
        WARNING,
        lambda path, entry: _under(path, _KARGS),
        lambda path: _KARGS,
        "kernel arguments in the image ({listed}) are not applied on an OpenShift node; set "
        "them in a MachineConfig's spec.kernelArguments and remove these files",
    ),
    # bootc lints.rs `var-tmpfiles`, RHCOS/FCOS layering docs: /var is the node's state, taken
    # from the image only at first provisioning and never updated after
    (
        "LAY106",
        WARNING,
        lambda path, entry: _under(path, "/var") and _runtime(path + "/") is None,  # not LAY107
        lambda path: _top(path, 3),
        "added under /var ({listed}), which a node takes only at its first provisioning; "
        "create it at boot with a tmpfiles.d entry (/usr/lib/tmpfiles.d/*.conf) or move it "
        "under /usr",
    ),
    # bootc lints.rs `var-log` and `nonempty-run-tmp`: emptied or mounted over at boot
    (
        "LAY107",
        WARNING,
        lambda path, entry: _runtime(path) is not None,
        lambda path: _runtime(path) or path,
        "content left by the build ({listed}), which the node empties or mounts over at boot; "
        "delete it in the RUN that writes it or create it at boot with tmpfiles.d",
    ),
    # bootc lints.rs `buildah-injected`: buildah's RUN leaves empty files where it mounts these
    (
        "LAY108",
        WARNING,
        lambda path, entry: path in _INJECTED and entry.kind == "file" and entry.size == 0,
        lambda path: path,
        "an empty file ({listed}) that buildah made as a RUN mount point, the base having "
        "none, and committed; nodes take it in place of what NetworkManager and Ignition "
        "write. A RUN cannot remove it (buildah mounts it there during RUN): COPY the file you "
        "mean into place, or waive LAY108 with that reason",
    ),
    # RHCOS docs "Using RHEL entitlements" / MCO on-cluster layering: entitlements are mounted
    # for the build, never committed; a credential in the image goes to whoever pulls it (a
    # link, e.g. /etc/pki/entitlement-host -> /run/secrets/…, holds none)
    (
        "LAY111",
        ERROR,
        lambda path, entry: entry.kind == "file" and _is_credential(path),
        _parent,
        "credentials left in the image ({listed}), readable by anyone who pulls it; use "
        "`entitlement: true` in image.yaml for RHEL entitlements (mounted, not committed) and "
        "`RUN --mount=type=secret` for others, delete them, and rotate what was pushed",
    ),
)


def _runtime(path: str) -> str | None:
    return next((root for root in _RUNTIME_TREES if _under(path, root)), None)


def _added_findings(
    new: Mapping[str, FileEntry], base: Mapping[str, FileEntry]
) -> Iterator[Finding]:
    for rule, severity, selected, key, message in _ADDED_RULES:
        paths = [path for path, entry in new.items() if selected(path, entry)]
        yield from _grouped(rule, severity, paths, key, message)
    # bootc docs filesystem.md: composefs/ostree deploy only the base's toplevel directories
    tops = [path for path in new if path != "/" and _top(path, 1) not in base]
    yield from _grouped(
        "LAY112",
        WARNING,
        tops,
        lambda path: _top(path, 1),
        "a new top-level directory or file ({listed}) the node does not keep; put it under "
        "/usr (e.g. /usr/share/<name>) or create it at boot with tmpfiles.d",
    )


def _is_credential(path: str) -> bool:
    return (
        path in _ENTITLEMENT_FILES
        or any(path == root or _under(path, root) for root in _CREDENTIAL_TREES)
        or path.endswith(_CREDENTIAL_ENDINGS)
        or path.rsplit("/", 1)[-1] in _CREDENTIAL_NAMES
        or (path.startswith("/etc/ssh/ssh_host_") and path.endswith("_key"))
    )


def _packages(content: content_lint.ImageContent) -> Iterator[Finding]:
    # MCO / RHCOS layering docs: the image owns the packages it removes or pins older across
    # cluster upgrades, and the base's fixes of them stop reaching the nodes
    changes = image_changes.compare(
        base_packages=content.base_packages,
        built_packages=content.built_packages,
        base_files=(),
        built_files=(),
    )
    removed = [change.name for change in changes.removed.first]
    older = [
        f"{change.name} {change.old} -> {change.new}"
        for change in changes.replaced.first
        if rpm_packages.compare_versions(_newest(change.new), _newest(change.old)) < 0
    ]
    for what, listed, count in (
        ("removes", removed, changes.removed.count),
        ("downgrades", older, len(older)),
    ):
        if listed:
            yield Finding(
                "LAY113",
                WARNING,
                RPM_DATABASE,
                None,
                f"the image {what} {count} package(s) of the base ({'; '.join(listed[:SHOWN])}"
                f"{'; …' if count > SHOWN else ''}), which then stay so across upgrades of the "
                f"base: keep the base's packages (install only what you add), or waive LAY113 "
                f"with the reason",
            )


def _newest(versions: str) -> str:
    """The newest evr of "evr.arch[, evr.arch…]" (multilib, install-only kernels)."""
    newest = ""
    for version in versions.split(", "):
        evr = version.rpartition(".")[0]
        if not newest or rpm_packages.compare_versions(evr, newest) > 0:
            newest = evr
    return newest


@dataclass(frozen=True)
class ContentReport(lint_finding.BySeverity):
    """The findings kept (errors first, then by path), those waived in image.yaml with the
    waiver's reason, and content-rule waivers that matched nothing (`stale`)."""

    findings: tuple[Finding, ...]
    waived: tuple[tuple[Finding, str], ...] = ()
    stale: tuple[str, ...] = ()

    def headline(self) -> str:
        """The first finding on one line, `LAY101 error /var/run: …, and 2 more`."""
        if not self.findings:
            return "no content findings"
        first = self.findings[0]
        more = f", and {len(self.findings) - 1} more" if len(self.findings) > 1 else ""
        return f"{first.id} {first.severity} {first.path}: {first.message}{more}"


def check(content: content_lint.ImageContent, allow: Sequence[repo_schema.Waiver]) -> ContentReport:
    """The content findings of a built image with image.yaml's waivers applied (the first
    waiver of a rule gives the reason); the static rules' (LAY0nn) are lint.py's."""
    reasons = {w.rule: w.reason for w in reversed(allow) if w.rule in CONTENT_RULE_IDS}
    every = sorted(
        dict.fromkeys(findings(content)), key=lambda f: (f.severity != ERROR, f.path, f.id)
    )
    kept = tuple(f for f in every if f.id not in reasons)
    waived = tuple((f, reasons[f.id]) for f in every if f.id in reasons)
    matched = {f.id for f, _ in waived}
    stale = tuple(rule for rule in reasons if rule not in matched)
    return ContentReport(kept, waived, stale)
