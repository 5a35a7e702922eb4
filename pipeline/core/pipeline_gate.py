"""What a pipeline view cell says of its environment's gate (core/pipeline_view.py): the open
promotion pull request and its gate's last verdict, as the `layering/gate/<environment>` status
said it. No I/O."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.core import gate, post_push


def shown(
    environment: str,
    *,
    watched: Sequence[gate.WatchedGate],
    passed: Sequence[gate.WatchedGate],
    post_pushes: Sequence[post_push.PostPush],
) -> tuple[int | None, str]:
    """(pull request, text): a watched gate's verdict (pending, failure) first; else the
    promotion pull request the service opened, with its gate's pass when one is kept (a
    person's pull request that passed is not a promotion on its way)."""
    for waiting in watched:
        if waiting.environment == environment:
            verdict = f"gate {waiting.state}: {waiting.description}" if waiting.state else ""
            return waiting.pr_number, verdict or "gate pending: re-judged when it changes"
    passes = {(verdict.environment, verdict.pr_number): verdict for verdict in passed}
    for pushed in post_pushes:
        number = pushed.pull_request
        if pushed.environment != environment or number is None:
            continue
        kept = passes.get((environment, number))
        if kept is not None:
            return number, f"gate success: {kept.description}"
        return number, "promotion pull request open: lands when merged"
    return None, ""
