"""Git adapter: the one module (with the promotion writer) that talks to Git. Does I/O.

One `GitRepo` keeps one GitPython `Repo` open and reads objects through its persistent
`git cat-file --batch` process, so reading a tree or a file costs a pipe round trip, not a
process. Not thread-safe: one `GitRepo` per thread or worker process. Its helpers live beside
it: git_objects.py (the cat-file reads), git_trees.py (raw objects and tree walks),
git_export.py (a directory of a commit written to disk), git_mirror.py (the workers' bare
mirrors and their locks), git_merge.py (merges without a work tree), git_errors.py (Git's
failures as ours).

Public API:

    GitRepo.open(path, caps=...) -> GitRepo     # existing work tree or bare repository;
                                                # `caps`: file size caps of its listings
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
    repo.export(rev, path, destination) -> Path | None  # the directory `path` at `rev` written
                                                # to destination/path (git_export.py); None
                                                # when there is no such directory
    repo.ensure_commit(commit_sha) -> None      # fetch everything when the commit is missing
    repo.close()  (also a context manager)

    mirror_path(workdir, url) -> Path           # where a worker keeps its mirror of `url`
    ensure_commit(path, url, commit_sha)        # the mirror holds the commit (fetching if not)
    branch_commit(git_repo, branch) -> str | None   # refs/heads/<b>, else refs/remotes/origin/<b>
    head_commit(path) -> str                    # HEAD's commit sha of the repository at path
    strip_credentials(text) -> str              # https://user:token@host -> https://***@host
    ZERO_SHA                                    # the all-zeros "no commit" of push events
    Merge(commit_sha, conflicts, source)        # commit_sha None when the merge conflicts

Errors: unknown or malformed revisions and paths raise `InputError` (exit 2 in the CLI);
`fetch`/`ensure_mirror` translate `git.GitCommandError` into `TemporaryError` (network, server
5xx: retry) or `PermanentError` (no such ref, repository not found, authentication refused),
with credentials stripped from every URL and only a tail of stderr kept. Credentials in a URL
reach neither git's argv nor the mirror's config (git_auth.py).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path
from types import TracebackType

import git

from pipeline.adapters import git_errors, git_export, git_merge, git_mirror, git_objects, git_trees
from pipeline.core import repo, repo_limits
from pipeline.core.errors import InputError, PermanentError

ZERO_SHA = "0" * 40
_SHA = re.compile(r"^[0-9a-f]{40}$")
# in-process ancestry walk before asking `git merge-base --is-ancestor`
_ANCESTRY_WALK = 64
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/true", "LC_ALL": "C"}

# defined beside the code that uses them, named here for callers (gitadapter.Merge, ...)
Merge = git_merge.Merge
mirror_path = git_mirror.mirror_path
strip_credentials = git_errors.strip_credentials


def ensure_commit(path: Path, url: str, commit_sha: str) -> None:
    """Make the mirror at `path` hold `commit_sha`, cloning and fetching as needed (a build or
    promotion may run on another machine than the event task that fetched it)."""
    with GitRepo.ensure_mirror(path, url) as mirror:
        mirror.ensure_commit(commit_sha)


def _check_rev(rev: str) -> str:
    # cat-file --batch reads one name per line; a rev is also never an option
    if not rev or any(c.isspace() for c in rev) or rev.startswith("-") or "\0" in rev:
        raise InputError(f"revision {rev!r} is not a valid revision name")
    return rev


class GitRepo(git_objects.ObjectReader):
    """An open repository; see the module docstring for the API."""

    def __init__(
        self, repository: git.Repo, *, caps: repo_limits.FileCaps = repo_limits.DEFAULT_CAPS
    ) -> None:
        super().__init__(repository)
        # the size caps its listings apply (a mirror's owner sets them from settings)
        self.caps = caps
        self._repo.git.update_environment(**_GIT_ENV)

    @classmethod
    def open(
        cls, path: Path | str, *, caps: repo_limits.FileCaps = repo_limits.DEFAULT_CAPS
    ) -> GitRepo:
        try:
            return cls(git.Repo(path), caps=caps)
        except git.NoSuchPathError:
            raise InputError(f"{path}: no such directory; pass a Git repository") from None
        except git.InvalidGitRepositoryError:
            raise InputError(f"{path}: not a Git repository (no .git found)") from None

    @classmethod
    def ensure_mirror(cls, path: Path | str, url: str) -> GitRepo:
        """Open the bare mirror at `path`, cloning `url` into it first when it is missing.
        `url` must come from settings: the service never fetches a URL taken from a payload."""
        remote = git_mirror.prepare(Path(path), url, env=_GIT_ENV)
        mirror = cls.open(path)
        # its fetches authenticate through the credential helper in their environment
        mirror._repo.git.update_environment(**remote.env)
        return mirror

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
            with git_mirror.file_lock(git_mirror.fetch_lock(Path(self._repo.git_dir))):
                self._repo.git.fetch(*args, kill_after_timeout=timeout)
        except git.GitCommandError as exc:
            action = f"git fetch {url} {' '.join(refs)}".strip()
            raise git_errors.translate(action, exc) from None

    def _refspec(self, ref: str) -> str:
        if _SHA.match(ref):
            return ref
        name = ref if ref.startswith("refs/") else f"refs/heads/{ref}"
        if self.bare:
            return f"+{name}:{name}"
        local = name.replace("refs/heads/", "refs/remotes/origin/", 1)
        return f"+{name}:{local}"

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

    def read_file(self, rev: str, path: str) -> bytes | None:
        """A file's content at `rev`, or None when there is no such file."""
        return self._blob(f"{self.resolve(rev)}:{path}")

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
            tail = git_errors.stderr_tail(exc)
            raise PermanentError(f"git merge-base {a} {b} failed: {tail}") from None
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
            tail = git_errors.stderr_tail(exc)
            raise PermanentError(f"git merge-base --is-ancestor failed: {tail}") from None
        return True

    def parents(self, rev: str) -> list[str]:
        return list(self._commit_header(self.resolve(rev))[1])

    def merge(self, base: str, head: str, *, offered: str | None = None) -> git_merge.Merge:
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
                return git_merge.Merge(commit, source=offered)
        if self.merge_base(base, head) is None:
            return git_merge.Merge(None, source="computed", unrelated=True)
        return git_merge.compute(self._repo.git, base, head, where=self.path)

    def changed_paths(
        self, a: str, b: str, *, prefixes: Collection[str] | None = None
    ) -> list[str]:
        """Files that differ between two commits (as `git diff --name-only --no-renames a b`),
        sorted; with `prefixes` (top-level directory names) only below those directories.

        Compares trees in-process and descends only into subtrees whose ids differ."""
        tree_a, _ = self._commit_header(self.resolve(a))
        tree_b, _ = self._commit_header(self.resolve(b))
        return git_trees.changed_paths(self._tree, tree_a, tree_b, prefixes=prefixes)

    # -- the repository model ---------------------------------------------------------------

    def image_trees(self, rev: str) -> dict[str, str]:
        """images/<name> -> Git tree id at `rev` (no entries when images/ is missing)."""
        root, _ = self._commit_header(self.resolve(rev))
        images = git_trees.subtree(self._tree, root, repo.IMAGES_DIR)
        if images is None:
            return {}
        return {
            name: sha
            for name, (mode, sha) in sorted(self._tree(images).items())
            if mode == git_trees.TREE_MODE
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
        `machineconfigs=False` skips clusters/*/machineconfigs/. A file over its size cap
        (`self.caps`) is listed as oversized, never read."""
        root, _ = self._commit_header(self.resolve(rev))
        return git_trees.listing(
            self._tree,
            self._blob,
            root,
            images=images,
            machineconfigs=machineconfigs,
            read_size=self._blob_size,
            caps=self.caps,
        )

    def load(self, rev: str) -> repo.Repository:
        return repo.parse(self.listing(rev))

    def export(self, rev: str, path: str, destination: Path) -> Path | None:
        """The directory `path` at `rev` written to `destination / path`, safely and with the
        commit's times (git_export.py); None when `rev` has no such directory."""
        commit = self.resolve(rev)
        tree = git_trees.subtree(self._tree, self._commit_header(commit)[0], path)
        if tree is None:
            return None
        found = self._data(commit)
        mtime = git_export.commit_time(found[1]) if found is not None else 0
        return git_export.export(
            self._tree,
            self._blob_stream,
            self._blob_size,
            tree,
            destination,
            path=path,
            caps=self.caps,
            mtime=mtime,
        )

    def ensure_commit(self, commit_sha: str) -> None:
        """Fetch everything when the repository lacks `commit_sha` (a build or promotion may
        run on another machine than the event task that fetched); PermanentError when it is
        still missing."""
        if not self.exists(commit_sha):
            self.fetch()
        if not self.exists(commit_sha):
            url = self._repo.remotes.origin.url if self._repo.remotes else str(self.path)
            raise PermanentError(f"commit {commit_sha} is not in {strip_credentials(url)}")


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
