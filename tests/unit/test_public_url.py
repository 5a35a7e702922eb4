"""A repository URL fit for an image label (core/redaction.py `public_url`): no credentials,
whatever form they come in."""

from __future__ import annotations

import pytest

from pipeline.core import redaction


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://github.com/o/r.git", "https://github.com/o/r.git"),
        ("https://bob:ghp_secret123@github.com/o/r.git", "https://github.com/o/r.git"),
        ("https://x-access-token:abc@github.com/o/r", "https://github.com/o/r"),
        ("https://github.com/o/r.git?access_token=abc#frag", "https://github.com/o/r.git"),
        ("ssh://git@github.com:22/o/r.git", "ssh://github.com:22/o/r.git"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("  file:///srv/git/r.git \n", "file:///srv/git/r.git"),
        ("/srv/git/r.git", "/srv/git/r.git"),
        ("", ""),
    ],
)
def test_public_url_drops_credentials(url: str, expected: str) -> None:
    assert redaction.public_url(url) == expected


def test_a_url_python_cannot_split_is_still_scrubbed() -> None:
    assert "pw" not in redaction.public_url("https://u:pw@[::1/r")
