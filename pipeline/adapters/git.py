"""Git adapter: the one module (with the promotion writer) that talks to Git. Does I/O.

One `GitRepo` keeps one GitPython `Repo` open and reads objects through its persistent
`git cat-file --batch` process, so reading a tree or a file costs a pipe round trip, not a
process. Not thread-safe: one `GitRepo` per thread or worker process.

Public API:

    GitRepo.open(path) -> GitRepo               # existing work tree or bare repository
    GitRepo.ensure_mirror(path, url) -> GitRepo # bare `--mirror` clone of `url` (from settings,
                                                # never from a payload); reused when present
    repo.fetch(*refs) -> None                   # no refs: everything (pruned); a ref is a branch
                                                # name, `refs/...` or a commit sha
    repo.resolve(rev) -> str                    # commit sha; InputError naming an unknown rev
    repo.exists(rev) -> bool
    repo.merge_base(a, b) -> str | None         # None when the histories are unrelated
    repo.is_ancestor(a, b) -> bool              # a == b counts as ancestor
    repo.merge(base, head, offered=None) -> Merge   # what merging head into base gives: a
                                                # merge commit (the server's `offered` one when
                                                # it is exactly that merge), or the conflicts
    repo.changed_paths(a, b, prefixes=None) -> list[str]   # like `git diff --name-only a b`
    repo.image_trees(rev) -> dict[str, str]     # images/<name> -> Git tree id
    repo.read_file(rev, path) -> bytes | None
    repo.listing(rev, images=None, machineconfigs=True) -> repo.TreeListing
    repo.load(rev) -> repo.Repository           # repo.parse(listing(rev))
    repo.close()  (also a context manager)

    branch_commit(git_repo, branch) -> str | None   # refs/heads/<b>, else refs/remotes/origin/<b>
    head_commit(path) -> str                    # HEAD's commit sha of the repository at path
    strip_credentials(text) -> str              # https://user:token@host -> https://***@host
    ZERO_SHA                                    # the all-zeros "no commit" of push events
    Merge(commit_sha, conflicts, source)        # commit_sha None when the merge conflicts

Errors: unknown or malformed revisions and paths raise `InputError` (exit 2 in the CLI);
`fetch`/`ensure_mirror` translate `git.GitCommandError` into `TemporaryError` (network, server
5xx: retry) or `PermanentError` (no such ref, repository not found, authentication refused),
with credentials stripped from every URL and only a tail of stderr kept.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import shutil
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import git

from pipeline.core import repo
from pipeline.core.errors import InputError, PermanentError, TemporaryError

ZERO_SHA = "0" * 40
_SHA = re.compile(r"^[0-9a-f]{40}$")
_TREE_MODE = 0o040000
_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
# stderr phrases that mean retrying cannot help; anything else (DNS, refused, reset, 5xx,
# early EOF, timeouts) is treated as passing
_PERMANENT_FETCH = (
    "couldn't find remote ref",
    "not our ref",
    "invalid refspec",
    "is not a valid",
    "repository not found",
    "does not appear to be a git repository",
    "authentication failed",
    "could not read username",
    "permission denied",
    "access denied",
    "http/2 403",
    "error: 403",
    "error: 401",
    "error: 404",
)
# in-process ancestry walk before asking `git merge-base --is-ancestor`
_ANCESTRY_WALK = 64
_CACHE_SIZE = 4096
_STDERR_TAIL = 600
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/true", "LC_ALL": "C"}


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def mirror_path(workdir: Path, url: str) -> Path:
    """Where a worker keeps its bare mirror of `url`: one per repository URL under the workdir,
    the same path on every machine, so a task can name it and any worker can (re)create it."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return workdir.resolve() / "mirrors" / f"{digest}.git"


def ensure_commit(path: Path, url: str, commit_sha: str) -> None:
    """Make the mirror at `path` hold `commit_sha`, cloning and fetching as needed (a build or
    promotion may run on another machine than the event task that fetched it)."""
    with GitRepo.ensure_mirror(path, url) as mirror:
        if not mirror.exists(commit_sha):
            mirror.fetch()
        if not mirror.exists(commit_sha):
            raise PermanentError(f"commit {commit_sha} is not in {strip_credentials(url)}")


def strip_credentials(text: str) -> str:
    """Hide user info in every URL of a message: `https://user:token@host` -> `https://***@host`."""
    return _CREDENTIALS.sub(r"\g<scheme>***@", text)


def _check_rev(rev: str) -> str:
    # cat-file --batch reads one name per line; a rev is also never an option
    if not rev or any(c.isspace() for c in rev) or rev.startswith("-") or "\0" in rev:
        raise InputError(f"revision {rev!r} is not a valid revision name")
    return rev


def _stderr_tail(exc: git.GitCommandError) -> str:
    stderr = exc.stderr if isinstance(exc.stderr, str) else str(exc.stderr or "")
    stderr = stderr.strip().removeprefix("stderr:").strip().strip("'").strip()
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    tail = " | ".join(lines)[-_STDERR_TAIL:]
    return strip_credentials(tail) or f"exit status {exc.status}"


def _translate(action: str, exc: git.GitCommandError) -> PermanentError | TemporaryError:
    tail = _stderr_tail(exc)
    message = f"{strip_credentials(action)} failed: {tail}"
    if any(phrase in tail.lower() for phrase in _PERMANENT_FETCH):
        return PermanentError(message)
    return TemporaryError(message)


_TREE_ENTRY = re.compile(rb"([0-7]+) ([^\0]*)\0(.{20})", re.DOTALL)
_MODES: dict[bytes, int] = {}


def _tree_entries(data: bytes) -> dict[str, tuple[int, str]]:
    """name -> (mode, sha) of a raw tree object: `<octal mode> <name>\\0<20-byte sha>`...

    GitPython's parser validates every name on the way; this one only splits, with one regular
    expression pass (the images/ tree of a large repository has hundreds of entries, read on
    every plan)."""
    entries: dict[str, tuple[int, str]] = {}
    for raw_mode, name, sha in _TREE_ENTRY.findall(data):
        mode = _MODES.get(raw_mode)
        if mode is None:
            mode = _MODES[raw_mode] = int(raw_mode, 8)
        entries[name.decode("utf-8", "surrogateescape")] = (mode, sha.hex())
    return entries


@dataclass(frozen=True)
class Merge:
    """What merging a head into a base gives: a merge commit, or the paths that conflict."""

    commit_sha: str | None  # None when the merge conflicts or the histories are unrelated
    conflicts: tuple[str, ...] = ()
    source: str = ""  # the ref the merge commit was read from, or "computed"
    unrelated: bool = False  # no common history: git refuses to merge at all


# the merge commits `merge` makes are previews on no ref: fixed identity and dates, so the same
# base and head always give the same commit
_MERGE_IDENTITY = {
    "GIT_AUTHOR_NAME": "coreos-layering-pipeline",
    "GIT_AUTHOR_EMAIL": "layering-pipeline@users.noreply.localhost",
    "GIT_AUTHOR_DATE": "1970-01-01T00:00:00+0000",
    "GIT_COMMITTER_NAME": "coreos-layering-pipeline",
    "GIT_COMMITTER_EMAIL": "layering-pipeline@users.noreply.localhost",
    "GIT_COMMITTER_DATE": "1970-01-01T00:00:00+0000",
}


def _text(value: str | bytes) -> str:
    # GitPython's cat-file helpers are annotated as str but hand back bytes
    return value.decode() if isinstance(value, bytes) else value


class GitRepo:
    """An open repository; see the module docstring for the API."""

    def __init__(self, repository: git.Repo) -> None:
        self._repo = repository
        self._repo.git.update_environment(**_GIT_ENV)
        # objects never change, so parsed trees and commits can be kept (bounded)
        self._trees: dict[str, dict[str, tuple[int, str]]] = {}
        self._commits: dict[str, tuple[str, list[str]]] = {}

    def clear_cache(self) -> None:
        """Forget parsed objects (for benchmarks; the cache is never stale)."""
        self._trees.clear()
        self._commits.clear()

    @classmethod
    def open(cls, path: Path | str) -> GitRepo:
        try:
            return cls(git.Repo(path))
        except git.NoSuchPathError:
            raise InputError(f"{path}: no such directory; pass a Git repository") from None
        except git.InvalidGitRepositoryError:
            raise InputError(f"{path}: not a Git repository (no .git found)") from None

    @classmethod
    def ensure_mirror(cls, path: Path | str, url: str) -> GitRepo:
        """Open the bare mirror at `path`, cloning `url` into it first when it is missing.

        `url` must come from settings: the service never fetches a URL taken from a payload.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # workers in several processes may make the first clone at once: one clones, the
        # others wait on the lock and then open what it made
        with _file_lock(path.parent / f".{path.name}.lock"):
            if (path / "HEAD").is_file() and (path / "objects").is_dir():
                mirror = cls.open(path)
                origin = mirror._repo.remotes.origin if mirror._repo.remotes else None
                if origin is None:
                    mirror._repo.create_remote("origin", url, mirror=True)
                elif origin.url != url:
                    origin.set_url(url)
                return mirror
            # clone beside the target and rename, so an interrupted clone leaves nothing
            staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
            try:
                git.Repo.clone_from(url, staging, mirror=True, env=_GIT_ENV)
                if path.exists():
                    path.rmdir()  # an empty directory only; anything else is not ours
                staging.rename(path)
            except git.GitCommandError as exc:
                raise _translate(f"git clone --mirror {url}", exc) from None
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return cls.open(path)

    # -- life cycle -------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return Path(self._repo.git_dir if self._repo.bare else self._repo.working_tree_dir or "")

    @property
    def bare(self) -> bool:
        return bool(self._repo.bare)

    def close(self) -> None:
        self._repo.close()

    def __enter__(self) -> GitRepo:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- network ----------------------------------------------------------------------------

    def fetch(self, *refs: str, timeout: float = 600) -> None:
        """Fetch from `origin` (the configured URL): everything with pruning when no refs are
        given, else each branch name, `refs/...` name or commit sha."""
        if not self._repo.remotes:
            raise PermanentError(f"{self.path}: no 'origin' remote to fetch from")
        refspecs = [self._refspec(_check_rev(ref)) for ref in refs]
        args = ["--prune", "origin"] if not refspecs else ["origin", *refspecs]
        url = self._repo.remotes.origin.url
        # tasks in several processes fetch into one mirror; two fetches moving the same ref
        # at once make one fail ("cannot lock ref ... but expected ..."): one at a time
        try:
            with _file_lock(Path(self._repo.git_dir) / "layering-fetch.lock"):
                self._repo.git.fetch(*args, kill_after_timeout=timeout)
        except git.GitCommandError as exc:
            raise _translate(f"git fetch {url} {' '.join(refs)}".strip(), exc) from None

    def _refspec(self, ref: str) -> str:
        if _SHA.match(ref):
            return ref
        name = ref if ref.startswith("refs/") else f"refs/heads/{ref}"
        if self.bare:
            return f"+{name}:{name}"
        local = name.replace("refs/heads/", "refs/remotes/origin/", 1)
        return f"+{name}:{local}"

    # -- objects ----------------------------------------------------------------------------

    def _header(self, name: str) -> tuple[str, str] | None:
        """(sha, type) of an object named `name` (any `git cat-file` name), or None.

        Reads the object through the same `cat-file --batch` process as everything else
        rather than starting a second (`--batch-check`) one: revisions name commits, small."""
        try:
            sha, kind, _, _ = self._repo.git.get_object_data(name)
        except ValueError:
            return None
        return _text(sha), _text(kind)

    def _data(self, name: str) -> tuple[str, bytes] | None:
        """(type, content) of an object named `name` (any `git cat-file` name), or None."""
        try:
            _, kind, _, data = self._repo.git.get_object_data(name)
        except ValueError:
            return None
        return _text(kind), data

    def _tree(self, sha: str) -> dict[str, tuple[int, str]]:
        entries = self._trees.get(sha)
        if entries is None:
            found = self._data(sha)
            if found is None or found[0] != "tree":
                raise InputError(f"{sha}: not a tree in {self.path}")
            entries = _tree_entries(found[1])
            if len(self._trees) >= _CACHE_SIZE:
                self._trees.clear()
            self._trees[sha] = entries
        return entries

    def _commit_header(self, sha: str) -> tuple[str, list[str]]:
        """(tree, parents) of a commit, parsed from its raw header."""
        cached = self._commits.get(sha)
        if cached is not None:
            return cached
        found = self._data(sha)
        if found is None or found[0] != "commit":
            raise InputError(f"{sha}: not a commit in {self.path}")
        tree = ""
        parents: list[str] = []
        for line in found[1].split(b"\n"):
            if not line:
                break
            if line.startswith(b"tree "):
                tree = line[5:].decode()
            elif line.startswith(b"parent "):
                parents.append(line[7:].decode())
        if len(self._commits) >= _CACHE_SIZE:
            self._commits.clear()
        self._commits[sha] = (tree, parents)
        return tree, parents

    def resolve(self, rev: str) -> str:
        """The commit sha `rev` names (sha, abbreviation, branch, tag, `HEAD~2`...)."""
        if rev in self._commits:
            return rev
        header = self._header(f"{_check_rev(rev)}^{{commit}}")
        if header is None:
            raise InputError(f"unknown revision {rev!r} in {self.path}")
        return header[0]

    def exists(self, rev: str) -> bool:
        try:
            self.resolve(rev)
        except InputError:
            return False
        return True

    def _subtree(self, commit: str, path: str) -> str | None:
        tree, _ = self._commit_header(commit)
        for part in path.split("/"):
            entry = self._tree(tree).get(part)
            if entry is None or entry[0] != _TREE_MODE:
                return None
            tree = entry[1]
        return tree

    def read_file(self, rev: str, path: str) -> bytes | None:
        """A file's content at `rev`, or None when there is no such file."""
        found = self._data(f"{self.resolve(rev)}:{path}")
        if found is None or found[0] != "blob":
            return None
        return found[1]

    # -- history ----------------------------------------------------------------------------

    def merge_base(self, a: str, b: str) -> str | None:
        """The best common ancestor of two commits, or None for unrelated histories."""
        a, b = self.resolve(a), self.resolve(b)
        if a == b:
            return a
        try:
            out = self._repo.git.merge_base(a, b)
        except git.GitCommandError as exc:
            if exc.status == 1:
                return None
            raise PermanentError(f"git merge-base {a} {b} failed: {_stderr_tail(exc)}") from None
        return str(out).strip() or None

    def is_ancestor(self, a: str, b: str) -> bool:
        """Whether `a` is reachable from `b` (a commit is its own ancestor)."""
        a, b = self.resolve(a), self.resolve(b)
        # a push usually adds a few commits: walk b's first parents in-process first
        seen: set[str] = set()
        frontier = [b]
        steps = 0
        while frontier and steps < _ANCESTRY_WALK:
            commit = frontier.pop(0)
            if commit == a:
                return True
            if commit in seen:
                continue
            seen.add(commit)
            steps += 1
            frontier.extend(self._commit_header(commit)[1])
        if not frontier:
            return False  # walked the whole history of b
        try:
            self._repo.git.merge_base("--is-ancestor", a, b)
        except git.GitCommandError as exc:
            if exc.status == 1:
                return False
            raise PermanentError(
                f"git merge-base --is-ancestor failed: {_stderr_tail(exc)}"
            ) from None
        return True

    def parents(self, rev: str) -> list[str]:
        return list(self._commit_header(self.resolve(rev))[1])

    def merge(self, base: str, head: str, *, offered: str | None = None) -> Merge:
        """What merging `head` into `base` gives (what a pull request's merge would commit).

        `offered` names a merge the server computed (GitHub's `refs/pull/<n>/merge`); it is
        used when it is the merge of exactly this base and head. GitHub recomputes that ref
        lazily, so it may be the merge of an older head or base: then, or when there is no
        such ref (plain Git servers; GitHub drops it while the merge conflicts), the merge is
        computed here with `git merge-tree --write-tree` (Git >= 2.38, no work tree) and
        written as a commit on no ref."""
        base, head = self.resolve(base), self.resolve(head)
        if offered is not None and self.exists(offered):
            commit = self.resolve(offered)
            if self.parents(commit) == [base, head]:
                return Merge(commit, source=offered)
        if self.merge_base(base, head) is None:
            return Merge(None, source="computed", unrelated=True)
        status, out, err = self._repo.git.merge_tree(
            "--write-tree",
            "--name-only",
            "--no-messages",
            base,
            head,
            with_extended_output=True,
            with_exceptions=False,
        )
        lines = [line for line in str(out).splitlines() if line]
        if status == 1 and lines:
            return Merge(None, tuple(sorted(set(lines[1:]))), source="computed")
        if status != 0 or not lines or not _SHA.match(lines[0]):
            raise PermanentError(
                f"git merge-tree {base[:12]} {head[:12]} in {self.path} failed "
                f"(exit {status}): {strip_credentials(str(err).strip())[-_STDERR_TAIL:]}"
            )
        commit = self._repo.git.commit_tree(
            lines[0],
            "-p",
            base,
            "-p",
            head,
            "-m",
            f"Merge {head} into {base}",
            env=_MERGE_IDENTITY,
        )
        return Merge(str(commit).strip(), source="computed")

    def changed_paths(
        self, a: str, b: str, *, prefixes: Collection[str] | None = None
    ) -> list[str]:
        """Files that differ between two commits (as `git diff --name-only --no-renames a b`),
        sorted; with `prefixes` (top-level directory names) only below those directories.

        Compares trees in-process and descends only into subtrees whose ids differ."""
        tree_a, _ = self._commit_header(self.resolve(a))
        tree_b, _ = self._commit_header(self.resolve(b))
        out: list[str] = []
        self._diff(tree_a, tree_b, "", out, prefixes)
        return sorted(out)

    def _diff(
        self,
        tree_a: str | None,
        tree_b: str | None,
        prefix: str,
        out: list[str],
        top: Collection[str] | None,
    ) -> None:
        entries_a = self._tree(tree_a) if tree_a else {}
        entries_b = self._tree(tree_b) if tree_b else {}
        for name in entries_a.keys() | entries_b.keys():
            if top is not None and name not in top:
                continue
            old, new = entries_a.get(name), entries_b.get(name)
            if old == new:
                continue
            path = f"{prefix}{name}"
            old_tree = old[1] if old and old[0] == _TREE_MODE else None
            new_tree = new[1] if new and new[0] == _TREE_MODE else None
            if old_tree or new_tree:
                self._diff(old_tree, new_tree, f"{path}/", out, None)
            # a file on either side (file replaced by a directory or the reverse counts too)
            if (old and old[0] != _TREE_MODE) or (new and new[0] != _TREE_MODE):
                out.append(path)

    # -- the repository model ---------------------------------------------------------------

    def image_trees(self, rev: str) -> dict[str, str]:
        """images/<name> -> Git tree id at `rev` (no entries when images/ is missing)."""
        images = self._subtree(self.resolve(rev), repo.IMAGES_DIR)
        if images is None:
            return {}
        return {
            name: sha
            for name, (mode, sha) in sorted(self._tree(images).items())
            if mode == _TREE_MODE
        }

    def listing(
        self,
        rev: str,
        *,
        images: Collection[str] | None = None,
        machineconfigs: bool = True,
    ) -> repo.TreeListing:
        """What the repository model reads at `rev`. Every image directory is listed with its
        tree id; `images` limits whose Containerfile and image.yaml are read (None: all);
        `machineconfigs=False` skips clusters/*/machineconfigs/."""
        commit = self.resolve(rev)
        root_tree, _ = self._commit_header(commit)
        root = self._tree(root_tree)
        image_dirs: dict[str, str | None] = {}
        cluster_dirs: list[str] = []
        files: dict[str, bytes] = {}
        unread: set[str] = set()
        top = root.get(repo.IMAGES_DIR)
        if top and top[0] == _TREE_MODE:
            for name, (mode, sha) in sorted(self._tree(top[1]).items()):
                if mode != _TREE_MODE:
                    continue
                image_dirs[name] = sha
                if images is not None and name not in images:
                    unread.add(name)
                    continue
                self._read_files(sha, f"{repo.IMAGES_DIR}/{name}", files, nested=False)
        top = root.get(repo.CLUSTERS_DIR)
        if top and top[0] == _TREE_MODE:
            for name, (mode, sha) in sorted(self._tree(top[1]).items()):
                if mode != _TREE_MODE:
                    continue
                cluster_dirs.append(name)
                self._read_files(sha, f"{repo.CLUSTERS_DIR}/{name}", files, nested=machineconfigs)
        return repo.TreeListing(image_dirs, cluster_dirs, files, frozenset(unread))

    def _read_files(self, tree: str, prefix: str, files: dict[str, bytes], *, nested: bool) -> None:
        if not nested:
            # Containerfile, image.yaml, cluster.yaml: look them up by path (one round trip
            # each) instead of reading the directory first
            for name in (repo.CONTAINERFILE, repo.IMAGE_SETTINGS, repo.CLUSTER_FILE):
                path = f"{prefix}/{name}"
                if repo.interesting(path):
                    found = self._data(f"{tree}:{name}")
                    if found is not None and found[0] == "blob":
                        files[path] = found[1]
            if not prefix.endswith(f"/{repo.MACHINECONFIGS_DIR}"):
                return
        for name, (mode, sha) in sorted(self._tree(tree).items()):
            path = f"{prefix}/{name}"
            if mode == _TREE_MODE:
                if nested and name == repo.MACHINECONFIGS_DIR:
                    self._read_files(sha, path, files, nested=False)
                continue
            if repo.interesting(path):
                found = self._data(sha)
                if found is not None and found[0] == "blob":
                    files[path] = found[1]

    def load(self, rev: str) -> repo.Repository:
        return repo.parse(self.listing(rev))


def branch_commit(git_repo: GitRepo, branch: str) -> str | None:
    """The commit of a branch: `refs/heads/<branch>`, else `refs/remotes/origin/<branch>`."""
    for name in (f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"):
        try:
            return git_repo.resolve(name)
        except InputError:
            continue
    return None


def head_commit(path: Path | str) -> str:
    """The commit HEAD names in the repository at `path`."""
    with GitRepo.open(path) as git_repo:
        return git_repo.resolve("HEAD")
