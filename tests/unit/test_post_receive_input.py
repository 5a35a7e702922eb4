"""pipeline/hooks/post_receive.py `updates`: the hook's stdin, however odd, yields the branch
updates it names and nothing else, without raising (a crash would lose every event of the push)."""

from __future__ import annotations

import pytest

from pipeline.hooks import post_receive

A = "a" * 40
B = "b" * 40
Z = "0" * 40


def line(ref: bytes, old: str = A, new: str = B) -> bytes:
    return f"{old} {new} ".encode() + ref + b"\n"


@pytest.mark.parametrize(
    ("stdin", "expected"),
    [
        (line(b"refs/heads/main"), [(A, B, "refs/heads/main")]),
        (line(b"refs/heads/main") + line(b"refs/heads/dev"), [
            (A, B, "refs/heads/main"),
            (A, B, "refs/heads/dev"),
        ]),
        (line(b"refs/heads/new", old=Z), [(Z, B, "refs/heads/new")]),
        (line(b"refs/heads/gone", new=Z), [(A, Z, "refs/heads/gone")]),
        (b"", []),
        (b"\n\n \n", []),
        (line(b"refs/tags/v1"), []),
        (line(b"refs/heads/"), []),
        (line(b"refs/heads/with space"), []),
        (f"{A}  {B} refs/heads/main\n".encode(), []),
        (f"{A}\t{B}\trefs/heads/main\n".encode(), []),
        (f"{A} {B}\n".encode(), []),
        (f"{A[:39]} {B} refs/heads/main\n".encode(), []),
        (f"{A.upper()} {B} refs/heads/main\n".encode(), []),
        (f"HEAD {B} refs/heads/main\n".encode(), []),
        (line(b"refs/heads/main\r"), [(A, B, "refs/heads/main")]),
        (line(b"refs/heads/$(touch${IFS}/tmp/pwned);`id`|&>"), [
            (A, B, "refs/heads/$(touch${IFS}/tmp/pwned);`id`|&>")
        ]),
        (line(b"refs/heads/caf\xe9"), [(A, B, "refs/heads/caf\udce9")]),
        (line(b"refs/heads/\xff\xfe") + line(b"refs/heads/main"), [
            (A, B, "refs/heads/\udcff\udcfe"),
            (A, B, "refs/heads/main"),
        ]),
        (b"garbage\x00\x01\n" + line(b"refs/heads/main"), [(A, B, "refs/heads/main")]),
        (line(b"refs/heads/main").rstrip(b"\n"), [(A, B, "refs/heads/main")]),
    ],
    ids=[
        "one", "two", "created", "deleted", "empty", "blank-lines", "tag", "bare-prefix",
        "space-in-ref", "double-space", "tabs", "two-fields", "short-sha", "upper-sha",
        "symbolic", "crlf", "shell-metacharacters", "latin1", "not-utf8-then-valid",
        "binary-garbage", "no-final-newline",
    ],
)  # fmt: skip
def test_updates(stdin: bytes, expected: list[tuple[str, str, str]]) -> None:
    assert post_receive.updates(stdin) == expected


def test_payload_keeps_odd_ref_as_json_data() -> None:
    import json

    ref = "refs/heads/caf\udce9;$(id)"
    body = json.dumps(post_receive.payload(A, Z, ref, "file:///r.git", "acme/r")).encode()
    assert json.loads(body)["ref"] == ref
