"""Check runs in the GitHub API stand-in (tests/plugins/github.py mixes this in): stateful
`POST /repos/{o}/{r}/check-runs`, `GET` and `PATCH /repos/{o}/{r}/check-runs/{id}` and
`GET /repos/{o}/{r}/commits/{ref}/check-runs` (`?check_name=`), answered in the response
schema's shape (ids, html_url, output.annotations_count, ...).

As GitHub does: annotations accumulate over the updates of a run; a request carrying more
than 50 annotations is refused with 422 (the request schema says so too, so it also fails the
test); `conclusion` completes a run. Tests read the runs of a commit by name, each with its
accumulated annotations and the statuses it went through.
"""

from __future__ import annotations

import copy
import datetime
from typing import Any

from werkzeug import Response

GITHUB = "https://api.github.com"
MAX_ANNOTATIONS = 50


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class CheckRunsMixin:
    """The check-run operations and accessors of GitHubStandIn, which provides `_respond`,
    `_lock`, `_ids` and `errors` (so attribute checks of this class alone do not apply)."""

    check_runs: dict[int, dict[str, Any]]

    # ---- test helpers

    def runs_of(self, sha: str) -> dict[str, list[dict[str, Any]]]:
        """name -> the check runs of that name on `sha`, oldest first; each run with its
        accumulated `annotations` and its `history` of statuses (one per request)."""
        with self._lock:
            found: dict[str, list[dict[str, Any]]] = {}
            for check_id in sorted(self.check_runs):
                run = self.check_runs[check_id]
                if run["head_sha"] == sha:
                    found.setdefault(run["name"], []).append(copy.deepcopy(run))
            return found

    def check_run(self, sha: str, name: str) -> dict[str, Any]:
        """The one check run `name` on `sha` (AssertionError when there are none or several)."""
        runs = self.runs_of(sha).get(name, [])
        assert len(runs) == 1, f"{len(runs)} check runs {name} on {sha[:12]}: {runs}"
        return runs[0]

    @staticmethod
    def lifecycle(run: dict[str, Any]) -> list[str]:
        """The statuses a run went through, repeats folded: e.g. queued, in_progress, completed."""
        folded: list[str] = []
        for status in run["history"]:
            if not folded or folded[-1] != status:
                folded.append(status)
        return folded

    # ---- operations

    def _annotations_refused(self, body: dict[str, Any]) -> Response | None:
        annotations = (body.get("output") or {}).get("annotations") or []
        if len(annotations) > MAX_ANNOTATIONS:
            self.errors.append(
                f"check run request with {len(annotations)} annotations (GitHub takes 50)"
            )
            return self._respond(
                422, {"message": "Validation Failed: at most 50 annotations per request"}
            )
        return None

    def _apply(self, run: dict[str, Any], body: dict[str, Any]) -> None:
        for key in ("name", "details_url", "external_id", "started_at", "completed_at"):
            if key in body:
                run[key] = body[key]
        if "conclusion" in body:
            run["conclusion"] = body["conclusion"]
            run["status"] = "completed"
        elif "status" in body:
            run["status"] = body["status"]
            if body["status"] != "completed":
                run["conclusion"] = None
        if run["status"] == "in_progress" and not run.get("started_at"):
            run["started_at"] = _now()
        if run["status"] == "completed" and not run.get("completed_at"):
            run["completed_at"] = _now()
        output = body.get("output")
        if output is not None:
            shown = {k: output[k] for k in ("title", "summary", "text") if k in output}
            run["output"].update(shown)
            run["annotations"].extend(copy.deepcopy(output.get("annotations") or []))
            run["output"]["annotations_count"] = len(run["annotations"])
        run["history"].append(run["status"])

    def _answer(
        self, operation: Any, params: dict[str, str], run: dict[str, Any]
    ) -> dict[str, Any]:
        example = operation.example
        if isinstance(example, dict) and "check_runs" in example:
            example = example["check_runs"][0]
        answer: dict[str, Any] = copy.deepcopy(example)
        repo = f"{params['owner']}/{params['repo']}"
        answer.update({k: v for k, v in run.items() if k not in ("annotations", "history")})
        answer["output"] = {
            **run["output"],
            "annotations_url": f"{GITHUB}/repos/{repo}/check-runs/{run['id']}/annotations",
        }
        answer["url"] = f"{GITHUB}/repos/{repo}/check-runs/{run['id']}"
        answer["html_url"] = f"https://github.com/{repo}/runs/{run['id']}"
        answer["node_id"] = f"CR_{run['id']}"
        answer["pull_requests"] = []
        return answer

    def _op_checks_create(
        self, operation: Any, params: dict[str, str], body: dict[str, Any]
    ) -> Response:
        refused = self._annotations_refused(body)
        if refused is not None:
            return refused
        with self._lock:
            check_id = next(self._ids)
            run: dict[str, Any] = {
                "id": check_id,
                "head_sha": body["head_sha"],
                "name": body["name"],
                "status": "queued",
                "conclusion": None,
                "details_url": None,
                "external_id": "",
                "started_at": None,
                "completed_at": None,
                "output": {
                    "title": None,
                    "summary": None,
                    "text": None,
                    "annotations_count": 0,
                },
                "annotations": [],
                "history": [],
            }
            self._apply(run, body)
            self.check_runs[check_id] = run
            answer = self._answer(operation, params, run)
        return self._respond(201, answer)

    def _op_checks_update(
        self, operation: Any, params: dict[str, str], body: dict[str, Any]
    ) -> Response:
        refused = self._annotations_refused(body)
        if refused is not None:
            return refused
        with self._lock:
            run = self.check_runs.get(int(params["check_run_id"]))
            if run is None:
                return self._respond(404, {"message": "Not Found"})
            self._apply(run, body)
            answer = self._answer(operation, params, run)
        return self._respond(operation.success, answer)

    def _op_checks_get(self, operation: Any, params: dict[str, str], body: Any) -> Response:
        with self._lock:
            run = self.check_runs.get(int(params["check_run_id"]))
            if run is None:
                return self._respond(404, {"message": "Not Found"})
            answer = self._answer(operation, params, run)
        return self._respond(operation.success, answer)

    def _op_checks_list_for_ref(
        self, operation: Any, params: dict[str, str], body: Any
    ) -> Response:
        name = params.get("?check_name")
        with self._lock:
            found = [
                self._answer(operation, params, run)
                for _, run in sorted(self.check_runs.items(), reverse=True)
                if run["head_sha"] == params["ref"] and (name is None or run["name"] == name)
            ]
        return self._respond(operation.success, {"total_count": len(found), "check_runs": found})
