"""The ports of check-run delivery (flows/status_delivery.py in check-runs mode): posting a
check run to GitHub, and reading the build record a build's check run is drawn from. No I/O.
"""

from __future__ import annotations

from typing import Protocol

from pipeline.core import builds, check_runs


class ChecksPoster(Protocol):
    """Creates or updates the check run of (sha, name) in place (adapters/github_checks.py):
    TemporaryError (rate limit, 5xx, refused credentials) is worth retrying, PermanentError
    is not."""

    def post(self, run: check_runs.CheckRun, *, seq: int) -> bool:
        """Send `run`; False when a newer one (a higher `seq`) of its (sha, name) was sent."""


class BuildRecordReader(Protocol):
    """The build records (adapters/build_records.py BuildStore)."""

    def get(self, build_id: str) -> builds.BuildRecord | None: ...
