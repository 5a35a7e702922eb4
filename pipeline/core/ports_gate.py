"""The port of the gates that passed, beside the watched ones of `ports.PromotionStore`
(adapters/promotion_store.py): a pull request's last passing verdict, which the pipeline view
shows with the open promotion pull request until its promotion lands or a newer verdict comes.
No I/O."""

from __future__ import annotations

from typing import Protocol

from pipeline.core import gate


class GatePasses(Protocol):
    """The last passing verdict per (environment, pull request), bounded."""

    def record_gate_pass(self, passed: gate.WatchedGate) -> None:
        """Keep it in place of the pull request's earlier pass (the oldest pull requests are
        dropped past the bound)."""

    def forget_gate_pass(self, environment: str, pr_number: int) -> None: ...

    def gate_passes(self) -> list[gate.WatchedGate]: ...
