"""The one error tree of the pipeline, split by what should happen next. No I/O."""

from __future__ import annotations


class PipelineError(Exception):
    """Anything the pipeline reports to a person: the message says what, where and the fix."""


class PermanentError(PipelineError):
    """Bad input (Containerfile, repository YAML, names, payloads): retrying cannot help."""


class InputError(PermanentError):
    """Unusable input for a command: the CLI exits 2 with the message, no traceback."""


class BuildFailed(PermanentError):
    """A Containerfile step failed; `step` names it (e.g. `STEP 3/5: RUN ...`)."""

    def __init__(self, message: str, *, step: str = "", log_tail: str = "") -> None:
        super().__init__(message)
        self.step = step
        self.log_tail = log_tail


class TemporaryError(PipelineError):
    """A passing fault (registry 5xx, connection reset, push race, rate limit): retried.
    `retry_after`: the least wait the server asked for (0: none; the retry policy decides)."""

    def __init__(self, message: str, *, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Cancelled(PipelineError):
    """Work superseded by a newer head; not an error to report as failure."""
