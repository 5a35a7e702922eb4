"""Safe commits to a shared branch (the promotion writer). Does I/O: Git, Redis, files.

One write: hold the branch's lock (Redis, so workers on several hosts agree), make a private
bare repository for this task (objects borrowed from the service's mirror through
`objects/info/alternates`, so nothing is copied and no two tasks share an index or checkout),
fetch the branch head from the upstream URL, ask the caller what to change at that head, write
blobs and a tree through a private index, commit once, push. A rejected push (someone pushed
in between) fetches the new head and asks the caller again: the change is re-derived on top of
the new head, which is what a rebase of a generated commit means, without textual conflicts.
Bounded; a tree equal to the head's makes no commit.

    writer = BranchWriter(url=..., workdir=..., mirror=..., lock=RedisBranchLock(client))
    result = writer.write("env/nonprod", change_for)   # change_for(head_sha, Repository)

The change and the result are core data (core/promotion_commit.py); this is ports.BranchWriter.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import git
import redis
from git.util import IterableList
from gitdb.base import IStream  # type: ignore[import-untyped]

from pipeline.adapters import git as gitadapter
from pipeline.adapters import git_auth
from pipeline.core import promotion_commit
from pipeline.core.errors import PermanentError, TemporaryError

_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/true", "LC_ALL": "C"}
_REMOTE = "upstream"
_LOCAL_REF = "refs/heads/layering-promotion"
_REF_RACES = ("failed to update ref", "cannot lock ref", "incorrect old value", "fetch first")
# what a server says when branch protection refuses a direct push: GitHub's GH006 ("protected
# branch hook declined") and a plain server's pre-receive (or update) hook refusal
_PROTECTED = ("GH006", "protected branch", "hook declined")
# the fix comes first: a commit status keeps only 140 characters
PULL_REQUEST_MODE_HINT = (
    "branch protection refuses direct pushes: set LAYERING_PROMOTION_MODE=pull-request "
    "(GitHub, with LAYERING_GITHUB_TOKEN or an App) to promote through pull requests"
)


@dataclass(frozen=True)
class Identity:
    name: str = "coreos-layering-pipeline"
    email: str = "layering-pipeline@users.noreply.localhost"


class BranchLock(Protocol):
    def hold(self, branch: str) -> contextlib.AbstractContextManager[None]: ...


class NoLock:
    """For a single writer (the CLI on a private repository)."""

    @contextlib.contextmanager
    def hold(self, branch: str) -> Iterator[None]:
        yield


class RedisBranchLock:
    """One writer per branch across every worker. The lock expires (`ttl`) if its holder dies."""

    def __init__(self, client: redis.Redis[bytes], *, ttl: float = 120, wait: float = 300) -> None:
        self._client = client
        self._ttl = ttl
        self._wait = wait

    @contextlib.contextmanager
    def hold(self, branch: str) -> Iterator[None]:
        lock = self._client.lock(
            f"layering:lock:branch:{branch}", timeout=self._ttl, blocking_timeout=self._wait
        )
        try:
            acquired = lock.acquire()
        except redis.RedisError as exc:
            raise TemporaryError(f"locking branch {branch}: Redis unavailable: {exc}") from exc
        if not acquired:
            raise TemporaryError(
                f"branch {branch} stayed locked by another writer for {self._wait:.0f}s",
                retry_after=10,
            )
        try:
            yield
        finally:
            with contextlib.suppress(redis.RedisError):
                lock.release()


class BranchWriter:
    def __init__(
        self,
        *,
        url: str,
        workdir: Path,
        mirror: Path | None = None,
        lock: BranchLock | None = None,
        identity: Identity = Identity(),
        max_attempts: int = 5,
    ) -> None:
        self._url = url
        # the scratch repository's remote is the URL without credentials; its git processes
        # get them from a credential helper in their environment (git_auth.py)
        self._remote = git_auth.remote(url)
        self._workdir = workdir
        self._mirror = mirror
        self._lock = lock or NoLock()
        self._identity = identity
        self._max_attempts = max_attempts

    def write(
        self, branch: str, change_for: promotion_commit.ChangeFor
    ) -> promotion_commit.WriteResult:
        with self._lock.hold(branch), self._scratch() as scratch:
            for attempt in range(1, self._max_attempts + 1):
                head = self._fetch(scratch, branch)
                with gitadapter.GitRepo.open(str(scratch.git_dir)) as reader:
                    model = reader.load(head)
                change = change_for(head, model)
                if change is None or change.empty:
                    return promotion_commit.WriteResult(head, None, attempt, change)
                commit = self._commit(scratch, head, change)
                if commit is None:
                    return promotion_commit.WriteResult(head, None, attempt, change)
                if self._push(scratch, commit, branch):
                    return promotion_commit.WriteResult(head, commit, attempt, change)
            raise TemporaryError(
                f"push to {self._safe_url} {branch} rejected {self._max_attempts} times "
                "(others kept pushing); will retry",
                retry_after=5,
            )

    @property
    def _safe_url(self) -> str:
        return gitadapter.strip_credentials(self._url)

    @contextlib.contextmanager
    def _scratch(self) -> Iterator[git.Repo]:
        self._workdir.mkdir(parents=True, exist_ok=True)
        directory = Path(tempfile.mkdtemp(prefix="write-", dir=self._workdir))
        try:
            scratch = git.Repo.init(directory, bare=True)
            scratch.git.update_environment(**_GIT_ENV, **self._remote.env)
            if self._mirror is not None and (self._mirror / "objects").is_dir():
                alternates = directory / "objects" / "info" / "alternates"
                alternates.write_text(f"{(self._mirror / 'objects').resolve()}\n")
            scratch.create_remote(_REMOTE, self._remote.url)
            yield scratch
            scratch.close()
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _git(self, scratch: git.Repo, action: str, *args: str, **kwargs: object) -> str:
        try:
            output = scratch.git.execute(["git", *args], **kwargs)  # type: ignore[call-overload]
        except git.GitCommandError as exc:
            # one line: the message ends up in statuses, logs and CLI errors
            tail = " ".join(gitadapter.strip_credentials(str(exc.stderr or "")).split())[-600:]
            raise TemporaryError(f"{action} in {self._safe_url} failed: {tail}") from exc
        return str(output).strip()

    def _fetch(self, scratch: git.Repo, branch: str) -> str:
        ref = f"refs/remotes/{_REMOTE}/{branch}"
        try:
            self._git(
                scratch,
                f"git fetch {branch}",
                "fetch",
                "--no-tags",
                _REMOTE,
                f"+refs/heads/{branch}:{ref}",
            )
        except TemporaryError as exc:
            if "couldn't find remote ref" not in str(exc):
                raise
            raise PermanentError(
                f"{self._safe_url} has no branch {branch}; create it from the default branch "
                "or check the environment name"
            ) from exc
        return self._git(scratch, "git rev-parse", "rev-parse", "--verify", f"{ref}^{{commit}}")

    def _commit(self, scratch: git.Repo, head: str, change: promotion_commit.Change) -> str | None:
        index = Path(scratch.git_dir) / "promotion.index"
        env = {"GIT_INDEX_FILE": str(index)}
        self._git(scratch, "git read-tree", "read-tree", head, env=env)
        # --index-info (mode sha<TAB>path; mode 0 removes) works without a work tree
        lines: list[str] = []
        for path, content in sorted(change.writes.items()):
            stream = scratch.odb.store(IStream(b"blob", len(content), io.BytesIO(content)))
            lines.append(f"100644 {stream.hexsha.decode()}\t{path}\n")
        lines += [f"0 {'0' * 40}\t{path}\n" for path in sorted(change.deletes)]
        info = Path(scratch.git_dir) / "promotion.index-info"
        info.write_text("".join(lines))
        with info.open("rb") as stdin:
            self._git(
                scratch, "git update-index", "update-index", "--index-info", env=env, istream=stdin
            )
        tree = self._git(scratch, "git write-tree", "write-tree", env=env)
        index.unlink(missing_ok=True)
        if tree == self._git(scratch, "git rev-parse", "rev-parse", f"{head}^{{tree}}"):
            return None
        identity = {
            "GIT_AUTHOR_NAME": self._identity.name,
            "GIT_AUTHOR_EMAIL": self._identity.email,
            "GIT_COMMITTER_NAME": self._identity.name,
            "GIT_COMMITTER_EMAIL": self._identity.email,
        }
        return self._git(
            scratch,
            "git commit-tree",
            "commit-tree",
            tree,
            "-p",
            head,
            "-m",
            change.message,
            env=identity,
        )

    def _fetch_tip(self, scratch: git.Repo, branch: str) -> str | None:
        """The head of `branch` upstream, fetched; None when there is no such branch."""
        try:
            return self._fetch(scratch, branch)
        except PermanentError:
            return None

    def _push(self, scratch: git.Repo, commit: str, branch: str, *, force: bool = False) -> bool:
        """True when pushed; False when rejected as not a fast-forward (fetch and retry)."""
        remote = scratch.remote(_REMOTE)
        # GitPython parses push results by local ref name; a bare sha gives no result at all
        self._git(scratch, "git update-ref", "update-ref", _LOCAL_REF, commit)
        refspec = f"{'+' if force else ''}{_LOCAL_REF}:refs/heads/{branch}"
        try:
            results: IterableList[git.PushInfo] = remote.push(refspec)
        except git.GitCommandError as exc:
            tail = gitadapter.strip_credentials(str(exc.stderr or "").strip())[-600:]
            if any(marker in tail for marker in _PROTECTED):
                raise PermanentError(
                    f"{branch}: {PULL_REQUEST_MODE_HINT} (git push {self._safe_url} refused)"
                ) from exc
            raise TemporaryError(f"git push {self._safe_url} {branch} failed: {tail}") from exc
        if not results:
            raise TemporaryError(f"git push {self._safe_url} {branch}: no result from git")
        for info in results:
            summary = gitadapter.strip_credentials(info.summary.strip())
            if info.flags & git.PushInfo.REJECTED:
                return False  # non-fast-forward: someone pushed first
            if info.flags & git.PushInfo.REMOTE_REJECTED and any(
                race in summary for race in _REF_RACES
            ):
                return False  # the server lost a ref-lock race to another push
            if info.flags & git.PushInfo.REMOTE_REJECTED and any(
                marker in summary for marker in _PROTECTED
            ):
                raise PermanentError(
                    f"{branch}: {PULL_REQUEST_MODE_HINT} "
                    f"(git push {self._safe_url} refused: {summary})"
                )
            if info.flags & git.PushInfo.REMOTE_REJECTED:
                raise PermanentError(
                    f"git push {self._safe_url} {branch}: the server refused it ({summary}); "
                    "check branch protection for the pipeline's identity"
                )
            if info.flags & (git.PushInfo.ERROR | git.PushInfo.REMOTE_FAILURE):
                raise TemporaryError(f"git push {self._safe_url} {branch} failed: {summary}")
        return True
