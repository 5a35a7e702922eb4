"""Celery tasks of the promotion stage (SPEC sections 3, 6, 7), queue `promotions`.

Task names and arguments are a stable contract (the webhook receiver enqueues them by name):

- "layering.promote"(commit_sha: str, environment: str): a push to env/<environment> whose head
  is commit_sha. Writes/deletes MachineConfigs for every cluster of the environment, commits
  once, pushes, posts `layering/promote/<cluster>`, then starts rollout watches.
- "layering.gate"(head_sha: str, base_environment: str, pr_number: int): a pull request into
  env/<base_environment> with head commit head_sha; posts `layering/gate/<base_environment>`.
- "layering.watch_rollout"(commit_sha: str, environment: str, cluster: str): follows one
  cluster's pools after its promotion commit (enqueued by "layering.promote").
- "layering.base_drift"(): periodic (Celery beat); compares each kube cluster's
  machine-config-osimageurl ConfigMap with cluster.yaml.

Enqueue with e.g. `app.send_task(PROMOTE_TASK, args=[sha, env], queue=PROMOTIONS_QUEUE)`.
Before enqueueing a promotion for a push, call `promotion.is_promotion_commit(message)` on the
head commit's message: the pipeline's own promotion commits are ignored.
"""

from __future__ import annotations

PROMOTE_TASK = "layering.promote"
GATE_TASK = "layering.gate"
WATCH_ROLLOUT_TASK = "layering.watch_rollout"
BASE_DRIFT_TASK = "layering.base_drift"
