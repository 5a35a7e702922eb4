"""A local GitHub REST API stand-in (pytest-httpserver) serving the operations of
tests/fixtures/github-openapi-subset.json (GitHub's official OpenAPI description).

Every request body is validated against its operation's requestBody schema with jsonschema;
a test using the `github_api` fixture fails at teardown if any request was invalid or hit an
operation outside the subset. Answers are the operations' own response examples, with request
values filled in and https://api.github.com rewritten to the stand-in's address (PyGithub
follows `url` fields and asserts they stay on its base URL's host).

Beyond the schema it enforces what GitHub enforces: status descriptions of at most 140
characters (422 otherwise). Check runs are stateful (tests/plugins/github_check_runs.py).
Faults can be queued per operation (rate limit, 5xx), or an outage declared: every request of
an operation fails until it is lifted.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.plugins.github_check_runs import CheckRunsMixin

SPEC_PATH = Path(__file__).resolve().parent.parent / "fixtures" / "github-openapi-subset.json"
GITHUB = "https://api.github.com"
MAX_DESCRIPTION = 140


def _nullable_to_types(schema: Any) -> Any:
    """OpenAPI 3.0 `nullable: true` -> JSON Schema `type: [T, "null"]` (recursively)."""
    if isinstance(schema, list):
        return [_nullable_to_types(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: _nullable_to_types(value) for key, value in schema.items()}
    if converted.pop("nullable", False) is True:
        kind = converted.get("type")
        if isinstance(kind, str):
            converted["type"] = [kind, "null"]
        if "enum" in converted:
            converted["enum"] = [*converted["enum"], None]
    return converted


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    pattern: re.Pattern[str]
    operation_id: str
    body_schema: dict[str, Any] | None
    success: int
    example: Any


def load_operations(spec_path: Path = SPEC_PATH) -> list[Operation]:
    spec = json.loads(spec_path.read_text())
    operations = []
    for template, methods in spec["paths"].items():
        names = re.findall(r"\{([a-z_]+)\}", template)
        regex = "^" + re.escape(template) + "$"
        for name in names:
            regex = regex.replace(re.escape("{" + name + "}"), f"(?P<{name}>[^/]+)")
        pattern = re.compile(regex)
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            success = min(int(code) for code in op["responses"] if code.startswith("2"))
            content = op["responses"][str(success)].get("content", {}).get("application/json", {})
            examples = content.get("examples") or {}
            example = next(iter(examples.values()), {}).get("value") if examples else None
            operations.append(
                Operation(
                    method=method.upper(),
                    template=template,
                    pattern=pattern,
                    operation_id=op["operationId"],
                    body_schema=_nullable_to_types(body["schema"]) if "schema" in body else None,
                    success=success,
                    example=example,
                )
            )
    return operations


@dataclass
class Recorded:
    method: str
    path: str
    operation_id: str | None
    body: Any
    headers: dict[str, str]


@dataclass
class Fault:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "fault injected by the test"


class GitHubStandIn(CheckRunsMixin):
    def __init__(self, server: HTTPServer, operations: list[Operation]) -> None:
        self.server = server
        self.operations = operations
        self.requests: list[Recorded] = []
        self.errors: list[str] = []
        self.statuses: dict[str, list[dict[str, Any]]] = {}
        self.permissions: dict[str, str] = {}
        self.pulls: dict[int, dict[str, Any]] = {}
        # pull requests the API opens: the head sha of a branch (the test's Git repository),
        # and what merging does there (returns the merge commit, None when not mergeable)
        self.branch_head: Callable[[str], str | None] | None = None
        self.merger: Callable[[dict[str, Any]], str | None] | None = None
        self.comments: dict[int, list[str]] = {}
        self.check_runs: dict[int, dict[str, Any]] = {}  # tests/plugins/github_check_runs.py
        self.faults: dict[str, list[Fault]] = {}
        self.outages: dict[str, Fault] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        server.expect_request(re.compile(".*")).respond_with_handler(self._handle)

    @property
    def url(self) -> str:
        return self.server.url_for("").rstrip("/")

    # ---- test helpers

    def inject(self, operation_id: str, *faults: Fault) -> None:
        with self._lock:
            self.faults.setdefault(operation_id, []).extend(faults)

    def outage(self, operation_id: str, fault: Fault | None) -> None:
        """Answer every request of `operation_id` with `fault` until called with None."""
        with self._lock:
            if fault is None:
                self.outages.pop(operation_id, None)
            else:
                self.outages[operation_id] = fault

    def attempts(self, operation_id: str, path_suffix: str = "") -> int:
        with self._lock:
            return len(
                [
                    r
                    for r in self.requests
                    if r.operation_id == operation_id and r.path.endswith(path_suffix)
                ]
            )

    def contexts(self, sha: str) -> dict[str, list[str]]:
        """context -> the states posted for it on `sha`, in order."""
        with self._lock:
            found: dict[str, list[str]] = {}
            for status in self.statuses.get(sha, []):
                found.setdefault(status["context"], []).append(status["state"])
            return found

    def latest(self, sha: str) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {s["context"]: s for s in self.statuses.get(sha, [])}

    def all_statuses(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return [(sha, s) for sha, posted in self.statuses.items() for s in posted]

    def add_pull(
        self, number: int, *, head_sha: str, head_ref: str, head_repo: str, base_ref: str = "main"
    ) -> None:
        self.pulls[number] = {
            "head": {"sha": head_sha, "ref": head_ref, "repo_full_name": head_repo},
            "base": {"ref": base_ref},
        }

    # ---- serving

    def _rewrite(self, document: Any) -> Any:
        return json.loads(json.dumps(document).replace(GITHUB, self.url))

    def _respond(
        self, status: int, document: Any, headers: dict[str, str] | None = None
    ) -> Response:
        return Response(
            json.dumps(self._rewrite(document)),
            status=status,
            headers=headers or {},
            content_type="application/json; charset=utf-8",
        )

    def _handle(self, request: Request) -> Response:
        path = request.path
        operation = None
        params: dict[str, str] = {}
        for candidate in self.operations:
            match = candidate.pattern.match(path)
            if match and candidate.method == request.method:
                operation, params = candidate, match.groupdict()
                # query parameters, apart from the path's: `?state`, `?head`, ...
                params.update({f"?{key}": value for key, value in request.args.items()})
                break
        body: Any = None
        raw = request.get_data()
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        record = Recorded(
            request.method,
            path,
            operation.operation_id if operation else None,
            body,
            dict(request.headers),
        )
        with self._lock:
            self.requests.append(record)
        if operation is None:
            self.errors.append(f"{request.method} {path}: not an operation of the subset")
            return self._respond(404, {"message": "Not Found"})
        if operation.body_schema is not None:
            try:
                jsonschema.validate(body, operation.body_schema)
            except jsonschema.ValidationError as exc:
                self.errors.append(f"{operation.operation_id}: {exc.message}")
                return self._respond(422, {"message": "Validation Failed", "errors": [exc.message]})
        with self._lock:
            queued = self.faults.get(operation.operation_id)
            fault = queued.pop(0) if queued else self.outages.get(operation.operation_id)
        if fault is not None:
            return self._respond(fault.status, {"message": fault.message}, fault.headers)
        handler = getattr(self, "_op_" + re.sub(r"[^a-z]", "_", operation.operation_id), None)
        if handler is None:
            return self._respond(operation.success, operation.example or {})
        result: Response = handler(operation, params, body)
        return result

    def _op_repos_create_commit_status(
        self, operation: Operation, params: dict[str, str], body: dict[str, Any]
    ) -> Response:
        description = body.get("description") or ""
        if len(description) > MAX_DESCRIPTION:
            self.errors.append(f"status description longer than {MAX_DESCRIPTION}: {description!r}")
            return self._respond(422, {"message": "Validation Failed"})
        status = copy.deepcopy(operation.example)
        status.update(
            id=next(self._ids),
            state=body["state"],
            description=body.get("description"),
            target_url=body.get("target_url"),
            context=body.get("context", "default"),
            url=f"{GITHUB}/repos/{params['owner']}/{params['repo']}/statuses/{params['sha']}",
        )
        with self._lock:
            self.statuses.setdefault(params["sha"], []).append(status)
        return self._respond(operation.success, status)

    def _op_repos_get_collaborator_permission_level(
        self, operation: Operation, params: dict[str, str], body: Any
    ) -> Response:
        permission = self.permissions.get(params["username"])
        if permission is None:
            return self._respond(404, {"message": "Not Found"})
        answer = copy.deepcopy(operation.example)
        answer["permission"] = permission
        answer["role_name"] = permission
        answer["user"]["login"] = params["username"]
        return self._respond(operation.success, answer)

    def _op_pulls_get(self, operation: Operation, params: dict[str, str], body: Any) -> Response:
        number = int(params["pull_number"])
        if number not in self.pulls:
            return self._respond(404, {"message": "Not Found"})
        return self._respond(
            operation.success, self._pull_answer(operation.example, params, number)
        )

    def _pull_answer(self, example: Any, params: dict[str, str], number: int) -> dict[str, Any]:
        pull = self.pulls[number]
        if self.branch_head is not None and pull.get("state", "open") == "open":
            pull["head"]["sha"] = self.branch_head(pull["head"]["ref"]) or pull["head"]["sha"]
        base_repo = f"{params['owner']}/{params['repo']}"
        answer: dict[str, Any] = copy.deepcopy(example)
        api = f"{GITHUB}/repos/{base_repo}"
        answer.update(
            number=number,
            state=pull.get("state", "open"),
            title=pull.get("title", ""),
            body=pull.get("body"),
            merged=pull.get("merged", False),
            url=f"{api}/pulls/{number}",
            issue_url=f"{api}/issues/{number}",
            comments_url=f"{api}/issues/{number}/comments",
            statuses_url=f"{api}/statuses/{pull['head']['sha']}",
        )
        answer["head"]["sha"] = pull["head"]["sha"]
        answer["head"]["ref"] = pull["head"]["ref"]
        answer["head"]["repo"]["full_name"] = pull["head"]["repo_full_name"]
        answer["base"]["ref"] = pull["base"]["ref"]
        answer["base"]["repo"]["full_name"] = base_repo
        return answer

    def _op_pulls_list(self, operation: Operation, params: dict[str, str], body: Any) -> Response:
        state, head, base = params.get("?state", "open"), params.get("?head"), params.get("?base")
        found = []
        for number, pull in sorted(self.pulls.items()):
            owner = pull["head"]["repo_full_name"].partition("/")[0]
            if state != "all" and pull.get("state", "open") != state:
                continue
            if head is not None and head != f"{owner}:{pull['head']['ref']}":
                continue
            if base is not None and base != pull["base"]["ref"]:
                continue
            found.append(self._pull_answer(operation.example[0], params, number))
        return self._respond(operation.success, found)

    def _op_pulls_create(
        self, operation: Operation, params: dict[str, str], body: dict[str, Any]
    ) -> Response:
        base_repo = f"{params['owner']}/{params['repo']}"
        owner, _, ref = str(body["head"]).rpartition(":")
        head_repo = f"{owner}/{params['repo']}" if owner else base_repo
        sha = self.branch_head(ref) if self.branch_head is not None else None
        if sha is None and self.branch_head is not None:
            return self._respond(422, {"message": f"Validation Failed: no branch {ref}"})
        with self._lock:
            number = max([*self.pulls, 0]) + 1
            self.pulls[number] = {
                "head": {"sha": sha or "0" * 40, "ref": ref, "repo_full_name": head_repo},
                "base": {"ref": body["base"]},
                "state": "open",
                "title": body.get("title", ""),
                "body": body.get("body"),
            }
        return self._respond(201, self._pull_answer(operation.example, params, number))

    def _op_pulls_update(
        self, operation: Operation, params: dict[str, str], body: dict[str, Any]
    ) -> Response:
        number = int(params["pull_number"])
        pull = self.pulls.get(number)
        if pull is None:
            return self._respond(404, {"message": "Not Found"})
        with self._lock:
            pull.update({k: body[k] for k in ("title", "body", "state") if k in body})
        return self._respond(
            operation.success, self._pull_answer(operation.example, params, number)
        )

    def _op_pulls_merge(
        self, operation: Operation, params: dict[str, str], body: dict[str, Any]
    ) -> Response:
        number = int(params["pull_number"])
        pull = self.pulls.get(number)
        if pull is None:
            return self._respond(404, {"message": "Not Found"})
        if self.branch_head is not None:
            pull["head"]["sha"] = self.branch_head(pull["head"]["ref"]) or pull["head"]["sha"]
        if pull.get("state", "open") != "open":
            return self._respond(405, {"message": "Pull Request is not mergeable"})
        if (body or {}).get("sha") not in (None, pull["head"]["sha"]):
            return self._respond(409, {"message": "Head branch was modified. Review and try"})
        merged = self.merger(pull) if self.merger is not None else "f" * 40
        if merged is None:
            return self._respond(405, {"message": "Pull Request is not mergeable"})
        with self._lock:
            pull.update(state="closed", merged=True, merge_commit_sha=merged)
        answer = {"sha": merged, "merged": True, "message": "Pull Request successfully merged"}
        return self._respond(operation.success, answer)

    def _op_issues_create_comment(
        self, operation: Operation, params: dict[str, str], body: dict[str, Any]
    ) -> Response:
        with self._lock:
            self.comments.setdefault(int(params["issue_number"]), []).append(body["body"])
        answer = copy.deepcopy(operation.example)
        answer["body"] = body["body"]
        return self._respond(operation.success, answer)

    def _op_apps_create_installation_access_token(
        self, operation: Operation, params: dict[str, str], body: Any
    ) -> Response:
        answer = copy.deepcopy(operation.example)
        answer["token"] = f"ghs_installation{params['installation_id']}token"
        answer["expires_at"] = "2099-01-01T00:00:00Z"
        return self._respond(operation.success, answer)


@pytest.fixture
def github_api() -> Iterator[GitHubStandIn]:
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    stand_in = GitHubStandIn(server, load_operations())
    try:
        yield stand_in
    finally:
        server.clear()
        server.stop()
    assert stand_in.errors == [], "requests the GitHub API would refuse:\n" + "\n".join(
        stand_in.errors
    )


def app_private_key() -> str:
    """A fresh RSA key in PEM, as a GitHub App's private key (the stand-in takes any JWT)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
