"""Runtime configuration as data: every LAYERING_ setting with its default and bounds. No I/O:
adapters/environment.py builds it from the environment once at start-up and it is passed on."""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)

from pipeline.core import isolation, retry, storage_driver
from pipeline.core import redis_url as redis_urls

_GITHUB_URL = re.compile(
    r"^(?:https://github\.com/|git@github\.com:|ssh://git@github\.com/)"
    r"(?P<repo>[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+?)(?:\.git)?/?$"
)

# what is retried: a build (registry), a commit status, a parked status, any other task
RetryKind = Literal["build", "status", "status-resend", "task"]


class Settings(BaseModel):
    # hide_input_in_errors: a rejected value (a URL with its password) is never in a message
    model_config = ConfigDict(
        frozen=True, extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    repo_url: str | None = None
    default_branch: str = "main"
    webhook_secret: SecretStr | None = None
    github_token: SecretStr | None = None
    # HMAC-SHA256 key of stored verifications (what the prod gate trusts); never in Redis
    verification_key: SecretStr | None = None
    github_app_id: int | None = None
    github_app_private_key: SecretStr | None = None
    github_app_installation_id: int | None = None
    github_api_url: str = "https://api.github.com"
    github_repository: str | None = None
    # how promotions reach env/<environment>: "pull-request" (GitHub: a promotion branch and
    # one pull request per environment, for protected branches), "commit" (a direct push; plain
    # Git servers) or "auto" (pull-request when a GitHub token or App is configured)
    promotion_mode: Literal["auto", "pull-request", "commit"] = "auto"
    # how lint and build results reach GitHub: "check-runs" (annotations, a summary, a log
    # excerpt; needs a GitHub App: GitHub refuses check runs to tokens), "statuses" (commit
    # statuses), or "auto" (check runs with App credentials, else statuses)
    github_checks: Literal["auto", "check-runs", "statuses"] = "auto"
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    registry_authfile: Path | None = None
    workdir: Path = Path(".layering")
    public_url: str = "http://127.0.0.1:8080"
    kubeconfig: Path | None = Field(
        default=None, validation_alias=AliasChoices("KUBECONFIG", "LAYERING_KUBECONFIG")
    )
    # auto: overlay where the worker's probe shows it works on the storage root, else vfs
    # (core/storage_driver.py); overlay or vfs: that driver (overlay failing stops the worker)
    buildah_storage_driver: storage_driver.Setting = "auto"
    # auto: oci where the worker's probe shows it works, else refuse to build; chroot only
    # when asked for (core/isolation.py says what each mode protects)
    buildah_isolation: isolation.Mode = "auto"
    buildah_root: Path | None = None
    buildah_runroot: Path | None = None
    entitlement_dir: Path = Path("/etc/pki/entitlement")
    # the content lint (LAY101..LAY113) of a built image's root filesystem between build and
    # push (flows/content_check.py); false pushes without it
    content_lint: bool = True
    buildah_command: str = "buildah"
    # containers registries.conf for buildah and skopeo; skopeo 1.9 ignores the standard
    # CONTAINERS_REGISTRIES_CONF variable, so it is read here and passed as a flag
    registries_conf: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("LAYERING_REGISTRIES_CONF", "CONTAINERS_REGISTRIES_CONF"),
    )
    skopeo_command: str = "skopeo"
    # sigstore signing of pushes (adapters/signed_push.py): the passphrase only ever in its
    # file, never on an argv or in an environment; the public key is what promotion and the
    # gate trust.
    # The passphrase file comes first so the key's check below sees it.
    signing_passphrase_file: Path | None = None
    signing_key: Path | None = None
    signing_public_key: Path | None = None
    build_log_max_lines: int = Field(default=20_000, ge=100)
    # bytes of one log line (longer ones are cut, with a marker) and of a build's whole log
    # (later lines are dropped after one marker line); adapters/build_logs.py
    build_log_line_max_bytes: int = Field(default=8 * 1024, ge=256, le=256 * 1024)
    build_log_max_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024)
    # who may read (web/read_access.py, web/listeners.py): "host:port" serves the dashboard,
    # /api and /metrics on a listener of their own and nothing else there; "" keeps them on
    # the webhook listener. A token, when set, is required for all of them.
    read_listen: str = ""
    read_token: SecretStr | None = None
    build_retention_seconds: int = Field(default=14 * 24 * 3600, ge=60)
    # the Celery soft time limit of a build; 5 s is allowed so a test can hit it
    build_timeout_seconds: int = Field(default=3600, ge=5)
    # a running build renews a lease in Redis every third of this (its build-key lock
    # expires with it); beat's sweep redelivers the build of an expired lease: a build
    # whose worker vanished runs again within lease + sweep interval
    build_lease_seconds: float = Field(default=30, ge=1, le=3600)
    build_sweep_interval_seconds: float = Field(default=15, ge=0.5, le=3600)
    delivery_ttl_seconds: int = Field(default=4 * 24 * 3600, ge=3 * 24 * 3600)
    max_body_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    # size caps of repository files (Containerfiles; cluster.yaml, image.yaml, MachineConfigs),
    # checked before a file is read or parsed: core/repo_limits.py
    repo_containerfile_max_bytes: int = Field(default=256 * 1024, ge=1024)
    repo_yaml_max_bytes: int = Field(default=256 * 1024, ge=1024)
    # retries: every back-off is retry.backoff over one of the policies below
    # (Settings.retry_policy); a server's Retry-After is always honoured (at most an hour)
    registry_retries: int = Field(default=4, ge=0, le=20)
    retry_backoff_seconds: float = Field(default=2.0, ge=0)
    retry_backoff_cap_seconds: float = Field(default=300, ge=0)
    # event and promotion tasks (Git fetch, Redis, GitHub reads, branch pushes)
    task_retries: int = Field(default=8, ge=0, le=100)
    task_backoff_seconds: float = Field(default=5.0, ge=0)
    task_backoff_cap_seconds: float = Field(default=300, ge=0)
    # promotion stage: one rollout-watch task run lasts at most rollout_watch_seconds, then it
    # re-enqueues itself until the pool is done or rollout_timeout_seconds have passed
    rollout_watch_seconds: float = Field(default=600, gt=0)
    rollout_timeout_seconds: float = Field(default=6 * 3600, gt=0)
    base_drift_interval_seconds: float = Field(default=900, ge=10)
    # promotion as reconciliation: how often beat re-runs the promotions whose wait ended (a
    # lost trigger heals) and completes the follow-ups of pushes a dead worker left behind
    promotion_sweep_seconds: float = Field(default=60, ge=0.5, le=3600)
    # the lock of one env branch's writer expires this long after a writer that died took it
    # (a SIGKILLed worker mid-push); git's own compare-and-swap on the push keeps two
    # writers apart should one outlive it, so it only needs to outlast a normal write
    promotion_lock_seconds: float = Field(default=30, ge=1, le=3600)
    # commit statuses: retried by their task with exponential back-off (base * 2**n, at most
    # 10 minutes, at least the server's Retry-After) status_retries times (~4 hours), then
    # parked in Redis and resent by beat every status_resend_interval_seconds for up to
    # status_park_seconds
    status_retries: int = Field(default=30, ge=0)
    status_backoff_seconds: float = Field(default=1.0, ge=0)
    status_backoff_cap_seconds: float = Field(default=600, ge=0)
    status_resend_interval_seconds: float = Field(default=60, ge=0.5)
    status_resend_cap_seconds: float = Field(default=3600, ge=0)
    status_park_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    # the plan and lint of each head run in a subprocess under these limits (a fork's files are
    # hostile input); its wall-clock limit is 3 x the CPU seconds + 30
    lint_cpu_seconds: int = Field(default=20, ge=1, le=3600)
    lint_memory_mb: int = Field(default=1024, ge=64)
    # a task whose worker process died this many times running it is parked, not run again
    poison_redeliveries: int = Field(default=2, ge=1, le=100)

    @field_validator("default_branch")
    @classmethod
    def _branch_is_a_ref_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._/-]+", value) or ".." in value or value.startswith("-"):
            raise ValueError("must be a plain branch name such as 'main'")
        return value

    @field_validator("github_checks")
    @classmethod
    def _check_runs_need_an_app(cls, value: str, info: ValidationInfo) -> str:
        app = all(
            info.data.get(name) is not None
            for name in ("github_app_id", "github_app_private_key", "github_app_installation_id")
        )
        if value == "check-runs" and not app:
            raise ValueError(
                "check-runs needs GitHub App credentials (LAYERING_GITHUB_APP_ID, "
                "LAYERING_GITHUB_APP_PRIVATE_KEY, LAYERING_GITHUB_APP_INSTALLATION_ID): GitHub "
                "refuses check runs to tokens; set them, or use auto or statuses"
            )
        return value

    @field_validator("signing_key")
    @classmethod
    def _signing_key_has_a_passphrase(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and info.data.get("signing_passphrase_file") is None:
            raise ValueError(
                "needs LAYERING_SIGNING_PASSPHRASE_FILE, the file holding the key's passphrase "
                "(`layering signing-key create` writes both)"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_is_a_known_form(cls, value: SecretStr) -> SecretStr:
        try:
            redis_urls.parse(value.get_secret_value())
        except redis_urls.RedisUrlError as exc:
            raise ValueError(exc.problem) from None  # the problem only: the URL holds passwords
        return value

    @field_validator("read_listen")
    @classmethod
    def _read_listen_is_host_and_port(cls, value: str) -> str:
        if value and _listen_address(value) is None:
            raise ValueError(
                "must be host:port with a port from 1 to 65535, e.g. 127.0.0.1:8081 "
                "(empty: the dashboard, /api and /metrics stay on the webhook listener)"
            )
        return value

    @field_validator("read_token")
    @classmethod
    def _read_token_is_strong(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"[!-~]{16,}", value.get_secret_value()):
            raise ValueError(
                "must be at least 16 printable ASCII characters without spaces; make one with "
                "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return value

    @property
    def read_address(self) -> tuple[str, int] | None:
        """(host, port) of LAYERING_READ_LISTEN; None: reads share the webhook listener."""
        return _listen_address(self.read_listen) if self.read_listen else None

    def retry_policy(self, kind: RetryKind) -> retry.RetryPolicy:
        """The back-off numbers of one kind of retry (see retry.backoff)."""
        if kind == "build":
            return retry.RetryPolicy(
                self.retry_backoff_seconds, self.retry_backoff_cap_seconds, self.registry_retries
            )
        if kind == "status":
            return retry.RetryPolicy(
                self.status_backoff_seconds,
                self.status_backoff_cap_seconds,
                self.status_retries,
                jitter=False,
            )
        if kind == "status-resend":
            # resent by beat until status_park_seconds have passed; the count is not the bound
            return retry.RetryPolicy(
                self.status_resend_interval_seconds,
                self.status_resend_cap_seconds,
                max_retries=1_000_000,
                jitter=False,
            )
        return retry.RetryPolicy(
            self.task_backoff_seconds, self.task_backoff_cap_seconds, self.task_retries
        )

    @property
    def resolved_promotion_mode(self) -> Literal["pull-request", "commit"]:
        """LAYERING_PROMOTION_MODE with "auto" resolved: pull-request when the service has
        GitHub credentials (a token, or an App's id, key and installation), else commit."""
        if self.promotion_mode != "auto":
            return self.promotion_mode
        app = self.has_github_app
        # an empty variable (compose's `${LAYERING_GITHUB_TOKEN:-}`) is no token
        token = self.github_token is not None and bool(self.github_token.get_secret_value())
        return "pull-request" if token or app else "commit"

    @property
    def resolved_github_checks(self) -> Literal["check-runs", "statuses"]:
        """LAYERING_GITHUB_CHECKS with "auto" resolved: check-runs when the service has a
        GitHub App's id, key and installation, else statuses (a token or plain Git)."""
        if self.github_checks != "auto":
            return self.github_checks
        return "check-runs" if self.has_github_app else "statuses"

    @property
    def has_github_app(self) -> bool:
        """The service has a GitHub App's id, key and installation (all three)."""
        return (
            self.github_app_id is not None
            and self.github_app_private_key is not None
            and self.github_app_installation_id is not None
        )

    @cached_property
    def github_repo_name(self) -> str | None:
        """`owner/name` from LAYERING_GITHUB_REPOSITORY, else from a GitHub LAYERING_REPO_URL."""
        if self.github_repository:
            return self.github_repository
        if self.repo_url and (match := _GITHUB_URL.match(self.repo_url)):
            return match.group("repo")
        return None


def _listen_address(value: str) -> tuple[str, int] | None:
    """("127.0.0.1", 8081) of "127.0.0.1:8081", ("::1", 8081) of "[::1]:8081"; None if bad."""
    match = re.fullmatch(
        r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>\d{1,5})", value
    )
    if match is None or not 1 <= int(match["port"]) <= 65535:
        return None
    return match["ipv6"] or match["host"], int(match["port"])
