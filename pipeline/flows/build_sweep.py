"""The sweep of lost builds, run by beat every LAYERING_BUILD_SWEEP_INTERVAL_SECONDS
("layering.sweep_builds"): a build whose lease passed its deadline lost its worker (SIGKILL,
OOM, node loss), so its task message is still unacknowledged in the broker and would come back
only after the visibility timeout (hours). The sweep claims each expired lease (one sweep wins
a lease, and a lease renewed meanwhile is left alone) and restores the task's message to its
queue, where another worker takes it. Talks to the world only through the ports handed in.

    sweep(leases=, records=, redelivery=) -> Swept(restored=[build ids], gone=[build ids])

A lease is only ever written by a build task that started, so a queued build that never ran
has none and is left to its queue. A finished build whose worker died before acknowledging
its message is restored too: the new delivery returns the finished record, and its outcome is
reported unless an earlier delivery reported it (BuildStore.claim_report).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pipeline.core import ports
from pipeline.core.errors import TemporaryError

log = logging.getLogger(__name__)


@dataclass
class Swept:
    restored: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # no unacknowledged message left

    def to_dict(self) -> dict[str, list[str]]:
        return {"restored": self.restored, "gone": self.gone}


def sweep(
    *, leases: ports.BuildLeases, records: ports.BuildRecords, redelivery: ports.Redelivery
) -> Swept:
    swept = Swept()
    for expired in leases.expired():
        lease = leases.claim(expired.build_id)
        if lease is None:
            continue  # renewed, or another sweep took it
        record = records.get(lease.build_id)
        state = record.state.value if record is not None else "no record"
        try:
            restored = bool(lease.task_id) and redelivery.restore(lease.task_id)
        except TemporaryError as exc:
            log.warning("build %s: not restored, retried next sweep: %s", lease.build_id, exc)
            raise
        if restored:
            log.warning(
                "build %s (%s): its worker %s vanished (lease expired); task %s delivered again",
                lease.build_id,
                state,
                lease.holder,
                lease.task_id,
            )
            swept.restored.append(lease.build_id)
        else:
            # acknowledged meanwhile, or restored by the broker's visibility timeout
            log.info(
                "build %s (%s): lease expired, no message left to restore", lease.build_id, state
            )
            swept.gone.append(lease.build_id)
    return swept
