"""Sending tasks of the contract (core/tasks.py) through a Celery app: the TaskQueue port.
Does network I/O (the broker)."""

from __future__ import annotations

from typing import Any

from celery import Celery

from pipeline.core import tasks


class CeleryTaskQueue:
    def __init__(self, app: Celery) -> None:
        self._app = app

    def _signature(self, call: tasks.TaskCall) -> Any:
        return self._app.signature(
            call.name, args=list(call.args), kwargs=dict(call.kwargs), queue=call.queue
        )

    def send(
        self,
        call: tasks.TaskCall,
        *,
        on_success: tasks.TaskCall | None = None,
        on_error: tasks.TaskCall | None = None,
    ) -> None:
        self._app.send_task(
            call.name,
            args=list(call.args),
            kwargs=dict(call.kwargs),
            queue=call.queue,
            task_id=call.task_id,
            countdown=call.countdown,
            link=self._signature(on_success) if on_success is not None else None,
            link_error=self._signature(on_error) if on_error is not None else None,
        )

    def revoke(self, task_id: str) -> None:
        self._app.control.revoke(task_id)
