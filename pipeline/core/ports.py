"""The ports: Protocols the flows depend on. Adapters implement them; tests hand in small fakes
(tests/fakes.py) or the real adapters. No I/O.

One section per concern; a flow imports this module and the core types, never an adapter.
"""

from __future__ import annotations

from typing import Protocol

from pipeline.core import commit_status, tasks

# -- shared by every flow -------------------------------------------------------------------


class StatusReporter(Protocol):
    """Commit statuses, all through one path: each is queued with a sequence number (a newer
    status of the same (sha, context) wins) and delivered by "layering.report_status", which
    retries and parks it when GitHub will not take it (adapters/status_queue.py)."""

    def report(self, sha: str, status: commit_status.Status) -> None: ...


class TaskQueue(Protocol):
    """Sends tasks of the contract in core/tasks.py (adapters/task_queue.py)."""

    def send(
        self,
        call: tasks.TaskCall,
        *,
        on_success: tasks.TaskCall | None = None,
        on_error: tasks.TaskCall | None = None,
    ) -> None: ...

    def revoke(self, task_id: str) -> None: ...
