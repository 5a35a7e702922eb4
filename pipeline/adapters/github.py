"""GitHub REST API through PyGithub: commit statuses (the StatusPoster port), collaborator
permission and pull request heads and states (the PullRequests port), and the operations of
promotion pull requests (find, open, edit, comment, merge: adapters/promotion_requests.py).
Token or GitHub App installation auth; base URL from settings (GitHub Enterprise, tests).
Does network I/O.

Rate limits (403/429 with Retry-After or X-RateLimit-Reset) and 5xx become TemporaryError with
`retry_after`, so the Celery task retries; PyGithub's own sleeping retry is turned off so that a
worker never blocks on it. Refused credentials (401/403) are TemporaryError too, retried every
5 minutes: an operator fixes the token, and no status is lost meanwhile. Other 4xx are
PermanentError. Descriptions are scrubbed of secrets and cut to 140 characters.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import requests
from github import Auth, Github, GithubException

from pipeline.core import commit_status, head, redaction
from pipeline.core.errors import PermanentError, TemporaryError
from pipeline.core.settings import Settings

WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})


def _retry_after(headers: Mapping[str, str] | None, *, now: float, default: float) -> float:
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    if lowered.get("retry-after", "").strip().isdigit():
        return float(lowered["retry-after"])
    reset = lowered.get("x-ratelimit-reset", "").strip()
    if reset.isdigit() and lowered.get("x-ratelimit-remaining", "").strip() == "0":
        return max(1.0, float(reset) - now)
    return default


def translate(action: str, exc: GithubException, *, now: float) -> TemporaryError | PermanentError:
    """A PyGithub error -> TemporaryError (retry) or PermanentError, message naming `action`."""
    status = exc.status
    message = exc.message or (exc.data.get("message") if isinstance(exc.data, dict) else "") or ""
    text = f"GitHub API: {action}: HTTP {status} {message}".strip()
    headers = exc.headers
    rate_limited = status == 429 or (
        status == 403
        and (
            "rate limit" in message.lower()
            or any(k.lower() == "retry-after" for k in headers or {})
            or (headers or {}).get("x-ratelimit-remaining") == "0"
        )
    )
    if rate_limited:
        return TemporaryError(
            f"{text} (rate limited)", retry_after=_retry_after(headers, now=now, default=60)
        )
    if status >= 500:
        return TemporaryError(text, retry_after=_retry_after(headers, now=now, default=15))
    if status in (401, 403):
        # a revoked or under-scoped token is fixed by an operator, not by the caller: keep
        # retrying slowly (statuses end up parked and are resent once the token works)
        return TemporaryError(
            f"{text}; check LAYERING_GITHUB_TOKEN (or the App's installation permissions)",
            retry_after=300,
        )
    return PermanentError(text)


def connect(settings: Settings, auth: Auth.Auth) -> Github:
    """A PyGithub client for LAYERING_GITHUB_API_URL that never sleeps in a retry of its own."""
    return Github(
        base_url=settings.github_api_url.rstrip("/"),
        auth=auth,
        retry=None,
        timeout=15,
        seconds_between_requests=None,
        seconds_between_writes=None,
        lazy=True,
    )


def app_auth(settings: Settings) -> Auth.AppInstallationAuth | None:
    """The GitHub App's installation auth; None without the App's id, key and installation."""
    if (
        settings.github_app_id is None
        or settings.github_app_private_key is None
        or settings.github_app_installation_id is None
    ):
        return None
    app = Auth.AppAuth(settings.github_app_id, settings.github_app_private_key.get_secret_value())
    return app.get_installation_auth(settings.github_app_installation_id)


class GitHubClient:
    """One repository's statuses and permissions."""

    def __init__(self, github: Github, repository: str, *, secrets: tuple[str, ...] = ()) -> None:
        self._github = github
        self._repository = repository
        self._repo = github.get_repo(repository)
        self._secrets = secrets

    @classmethod
    def from_settings(cls, settings: Settings) -> GitHubClient | None:
        """None when the service has no GitHub repository or credentials (plain Git servers)."""
        repository = settings.github_repo_name
        secrets = tuple(
            s.get_secret_value()
            for s in (
                settings.github_token,
                settings.github_app_private_key,
                settings.webhook_secret,
            )
            if s is not None
        )
        auth: Auth.Auth
        if settings.github_token is not None:
            auth = Auth.Token(settings.github_token.get_secret_value())
        elif (installation := app_auth(settings)) is not None:
            auth = installation
        else:
            return None
        if repository is None:
            return None
        return cls(connect(settings, auth), repository, secrets=secrets)

    def close(self) -> None:
        self._github.close()

    def _call_failed(self, action: str, exc: Exception) -> TemporaryError | PermanentError:
        if isinstance(exc, GithubException):
            error = translate(action, exc, now=time.time())
        else:
            error = TemporaryError(f"GitHub API: {action}: {type(exc).__name__}", retry_after=15)
        return type(error)(redaction.scrub(str(error), self._secrets), **_retry_kwargs(error))

    def set_status(
        self,
        sha: str,
        *,
        context: str,
        state: commit_status.State,
        description: str,
        target_url: str | None,
    ) -> None:
        text = commit_status.description(redaction.scrub(description, self._secrets))
        try:
            self._repo.get_commit(sha).create_status(
                state=state,
                context=context,
                description=text,
                **({"target_url": target_url} if target_url else {}),
            )
        except (GithubException, requests.RequestException) as exc:
            raise self._call_failed(f"status {context}={state} on {sha[:12]}", exc) from exc

    def permission(self, user: str) -> str:
        """`admin`, `maintain`, `write`, `triage`, `read` or `none` (not a collaborator)."""
        try:
            return str(self._repo.get_collaborator_permission(user))
        except GithubException as exc:
            if exc.status == 404:
                return "none"
            raise self._call_failed(f"permission of {user}", exc) from exc
        except requests.RequestException as exc:
            raise self._call_failed(f"permission of {user}", exc) from exc

    def can_write(self, user: str) -> bool:
        return self.permission(user) in WRITE_PERMISSIONS

    def pull_head(self, number: int) -> head.PullHead:
        try:
            pull = self._repo.get_pull(number)
            head_repo = pull.head.repo
            return head.PullHead(
                number=number,
                head_sha=pull.head.sha,
                head_ref=pull.head.ref,
                head_repository=head_repo.full_name if head_repo is not None else None,
                base_ref=pull.base.ref,
                state=pull.state,
            )
        except (GithubException, requests.RequestException) as exc:
            raise self._call_failed(f"pull request #{number}", exc) from exc

    # ---- promotion pull requests (adapters/promotion_requests.py)

    def open_pulls(self, *, head: str, base: str) -> list[int]:
        """Numbers of the open pull requests from branch `head` of this repository into
        `base`, oldest first."""
        owner = self._repository.partition("/")[0]
        try:
            pulls = self._repo.get_pulls(state="open", base=base, head=f"{owner}:{head}")
            return sorted(pull.number for pull in pulls)
        except (GithubException, requests.RequestException) as exc:
            raise self._call_failed(f"open pull requests {head} -> {base}", exc) from exc

    def create_pull(self, *, head: str, base: str, title: str, body: str) -> int:
        try:
            pull = self._repo.create_pull(
                base=base, head=head, title=title, body=body, maintainer_can_modify=False
            )
            return pull.number
        except (GithubException, requests.RequestException) as exc:
            raise self._call_failed(f"open pull request {head} -> {base}", exc) from exc

    def edit_pull(
        self,
        number: int,
        *,
        title: str | None = None,
        body: str | None = None,
        closed: bool = False,
    ) -> None:
        changes: dict[str, str] = {}
        if title is not None:
            changes["title"] = title
        if body is not None:
            changes["body"] = body
        if closed:
            changes["state"] = "closed"
        try:
            self._repo.get_pull(number).edit(**changes)  # type: ignore[arg-type]
        except (GithubException, requests.RequestException) as exc:
            raise self._call_failed(f"edit pull request #{number}", exc) from exc

    def comment(self, number: int, text: str) -> None:
        try:
            self._repo.get_pull(number).create_issue_comment(redaction.scrub(text, self._secrets))
        except (GithubException, requests.RequestException) as exc:
            raise self._call_failed(f"comment on pull request #{number}", exc) from exc

    def merge_pull(self, number: int, *, sha: str, title: str) -> bool:
        """Merge (a merge commit) if the head is still `sha`; False when GitHub refuses: not
        mergeable or required checks missing (405), head moved (409), conflict (422)."""
        try:
            pull = self._repo.get_pull(number)
            return bool(pull.merge(commit_title=title, merge_method="merge", sha=sha).merged)
        except GithubException as exc:
            if exc.status in (405, 409, 422):
                return False
            raise self._call_failed(f"merge pull request #{number}", exc) from exc
        except requests.RequestException as exc:
            raise self._call_failed(f"merge pull request #{number}", exc) from exc


def _retry_kwargs(error: TemporaryError | PermanentError) -> dict[str, float]:
    return {"retry_after": error.retry_after} if isinstance(error, TemporaryError) else {}
