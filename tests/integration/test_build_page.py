"""The build page (`/builds/{id}`) over HTTP from the real web app, reading real Redis records
written by the real adapters: a failed build shows its failing step and Containerfile line
first; the findings table holds the commit's lint findings for the image (kept by the head
store, bounded) and the built image's content findings, severity in words; the duration chart
compares the build with its image's other finished builds (kept per image, bounded)."""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import httpx
import pytest
import redis

from pipeline.adapters import build_records, head_store
from pipeline.core import builds, commit_status, head_lint
from pipeline.core.settings import Settings
from pipeline.web import build_source
from pipeline.web import server as web
from tests import receiver, services

DATABASE = 11  # no other test uses it: the module starts from an empty database
SHA = "c" * 40
OTHER_SHA = "d" * 40
HOSTILE = "<script>alert('x')</script>"
SVG = "{http://www.w3.org/2000/svg}"


@dataclasses.dataclass(frozen=True)
class Served:
    url: str
    store: build_records.BuildStore
    ids: dict[str, str]


def finished(
    store: build_records.BuildStore,
    build_id: str,
    *,
    image: str,
    start: float,
    seconds: float,
    state: builds.BuildState = builds.BuildState.SUCCEEDED,
    commit_sha: str = SHA,
    **fields: object,
) -> str:
    record = builds.queued(build_id, image=image, cluster="nonprod", now=start, commit_sha=SHA)
    store.save(
        dataclasses.replace(
            record,
            state=state,
            commit_sha=commit_sha,
            started_at=start,
            finished_at=start + seconds,
            **fields,  # type: ignore[arg-type]
        )
    )
    return build_id


@pytest.fixture(scope="module")
def served(redis_server: services.RedisServer) -> Iterator[Served]:
    url = redis_server.url.rsplit("/", 1)[0] + f"/{DATABASE}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    store = build_records.BuildStore.from_settings(Settings(redis_url=url), client=client)
    lint = commit_status.LintFinding(
        "LAY009", "warning", "images/htop/Containerfile", 2, f"dnf update moves the base {HOSTILE}"
    )
    many = [
        commit_status.LintFinding("LAY003", "warning", "images/big/Containerfile", n, "m")
        for n in range(1, 151)
    ]
    head_store.RedisHeadStore(client).record_lint(SHA, {"htop": [lint], "big": many})
    ids = {
        "failed": finished(
            store,
            "20250101000500-failed",
            image="htop",
            start=5000.0,
            seconds=95.0,
            state=builds.BuildState.FAILED,
            error="images/htop/Containerfile:3: RUN exited 1: no package nosuchpkg",
            failing_step="STEP 3/3: RUN dnf install -y nosuchpkg",
            failing_line=3,
        ),
        "content": finished(
            store,
            "20250101000600-content",
            image="htop",
            start=6000.0,
            seconds=70.0,
            commit_sha=OTHER_SHA,
            content_findings=(
                {
                    "id": "LAY106",
                    "severity": "warning",
                    "path": "/var/lib/htop",
                    "line": None,
                    "message": f"added under /var {HOSTILE}",
                },
                {
                    "id": "LAY111",
                    "severity": "error",
                    "path": "/etc/pki/entitlement/1.pem",
                    "line": None,
                    "message": "entitlement left by the build",
                },
            ),
        ),
        "big": finished(store, "20250101000700-big", image="big", start=7000.0, seconds=5.0),
    }
    for n in range(5):
        finished(store, f"2025010100000{n}-earlier", image="htop", start=n * 1000.0, seconds=60 + n)
    # neither finished nor of this image: never in its chart
    store.save(builds.queued("20250101000800-queued", image="htop", cluster="nonprod", now=8e3))
    finished(store, "20250101000900-elsewhere", image="chrony", start=9000.0, seconds=1.0)
    app = web.create_app(
        Settings(redis_url=url, webhook_secret="s" * 16), store=build_source.StoreView(store)
    )
    with receiver.serving(app) as server:
        yield Served(server.url, store, ids)
    client.flushdb()
    client.close()


def page(served: Served, name: str) -> str:
    response = httpx.get(f"{served.url}/builds/{served.ids[name]}")
    assert response.status_code == 200, response.text[:300]
    return response.text


def rows(text: str, table_id: str) -> list[list[str]]:
    """The cells' text of each body row of table `table_id`."""
    body = text.split(f'id="{table_id}"', 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [
        [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body)
    ]


def chart(text: str) -> ET.Element:
    svg = text[text.index("<svg") : text.index("</svg>") + len("</svg>")]
    return ET.fromstring(svg)  # noqa: S314 (the page under test's own output)


def test_a_failed_build_shows_its_failing_step_and_line_first(served: Served) -> None:
    text = page(served, "failed")
    failure = text.index('id="failure"')
    assert failure < text.index('id="findings"') < text.index('id="log"')
    assert '<code id="failing-where">images/htop/Containerfile:3</code>' in text
    assert '<code id="failing-step">STEP 3/3: RUN dnf install -y nosuchpkg</code>' in text
    assert "no package nosuchpkg" in text[failure : text.index('id="findings"')]


def test_the_findings_table_holds_the_commits_lint_and_the_content_lint(served: Served) -> None:
    failed = page(served, "failed")
    assert rows(failed, "findings") == [
        [
            "Containerfile lint",
            "LAY009",
            "warning",
            "images/htop/Containerfile:2",
            "dnf update moves the base &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;",
        ]
    ]
    assert "0 errors, 1 warning: the Containerfile lint of commit" in failed
    assert HOSTILE not in failed
    content = page(served, "content")
    assert rows(content, "findings") == [
        ["built image", "LAY111", "error", "/etc/pki/entitlement/1.pem",
         "entitlement left by the build"],
        ["built image", "LAY106", "warning", "/var/lib/htop",
         "added under /var &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"],
    ]  # fmt: skip
    assert "1 error, 1 warning" in content
    assert "none on record" in content, "no head linted that commit"
    assert HOSTILE not in content
    # 150 findings of one image: the first 100 kept, the rest counted
    big = page(served, "big")
    assert len(rows(big, "findings")) == head_lint.STORED_FINDINGS
    assert "… and 50 more lint findings" in big


def test_the_duration_chart_compares_the_build_with_its_images_builds(served: Served) -> None:
    text = page(served, "failed")
    root = chart(text)
    assert root.get("role") == "img"
    assert root.findtext(f"{SVG}title") == (
        "Build duration: this build against the last 7 finished builds of htop"
    )
    drawn = [r for r in root.iter(f"{SVG}rect") if "bar" in (r.get("class") or "").split()]
    assert len(drawn) == 7  # five earlier, the failed and the content one: not queued, not chrony
    current = [r for r in drawn if "bar-current" in (r.get("class") or "")]
    assert [r.findtext(f"{SVG}title") for r in current] == [
        "20250101000500-failed: 1m35s, failed, this build"
    ]
    assert "This build took 1m35s; the median of the last 7 finished builds of htop is 1m03s" in (
        text
    )
    table = rows(text, "duration-table")
    assert len(table) == 7
    assert table[5] == ["20250101000500-failed (this build)", "failed", "1m35s"]
    # the page still runs only its own script: the SVG carries none
    assert text.count("<script") == 1


def test_each_image_keeps_only_its_newest_builds_indexed(served: Served) -> None:
    for n in range(build_records.IMAGE_INDEX_LENGTH + 5):
        served.store.save(builds.queued(f"m-{n:04d}", image="many", cluster="c", now=1e4 + n))
    newest = served.store.of_image("many", 1000)
    assert len(newest) == build_records.IMAGE_INDEX_LENGTH
    assert newest[0].id == f"m-{build_records.IMAGE_INDEX_LENGTH + 4:04d}"
    ttl = served.store.client.ttl(build_records.IMAGE_INDEX_PREFIX + "many")
    assert 0 < ttl <= served.store.retention_seconds
    assert [r.id for r in served.store.of_image("many", 2)] == ["m-0104", "m-0103"]


def findings_block(text: str) -> str:
    """The findings block as the page served it (inside its section)."""
    section = text.split('<section id="findings-section"', 1)[1].split(">\n", 1)[1]
    return section.split("</section>", 1)[0]


def test_the_findings_table_follows_the_content_stage_live(served: Served) -> None:
    """The page's poll says how many content findings it shows; the answer carries the block
    rendered anew only once the record holds another number, the same markup a reload gives."""
    record = builds.start(
        builds.queued(
            "20250101001000-live", image="htop", cluster="nonprod", now=1e4, commit_sha=SHA
        ),
        now=1e4,
    )
    served.store.save(record)
    before = httpx.get(f"{served.url}/builds/{record.id}").text
    assert 'data-content-findings="0"' in before
    assert [row[0] for row in rows(before, "findings")] == ["Containerfile lint"]
    tail = f"{served.url}/api/builds/{record.id}/log/tail"
    assert httpx.get(tail, params={"findings": 0}).json()["findings"] is None
    assert httpx.get(tail).json()["findings"] is None  # not asked for: never sent

    # the content stage ends while the build still runs (flows/build saves its findings)
    found = {"id": "LAY107", "severity": "warning", "path": "/tmp/x", "line": None}
    served.store.save(
        dataclasses.replace(record, content_findings=({**found, "message": f"in /tmp {HOSTILE}"},))
    )
    chunk = httpx.get(tail, params={"findings": 0}).json()
    assert chunk["state"] == "running"
    assert chunk["findings"]["count"] == 1
    html = chunk["findings"]["html"]
    assert rows(html, "findings") == [
        ["Containerfile lint", "LAY009", "warning", "images/htop/Containerfile:2",
         "dnf update moves the base &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"],
        ["built image", "LAY107", "warning", "/tmp/x",
         "in /tmp &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"],
    ]  # fmt: skip
    assert "0 errors, 2 warnings" in html
    assert HOSTILE not in html
    after = httpx.get(f"{served.url}/builds/{record.id}").text
    assert 'data-content-findings="1"' in after
    assert html == findings_block(after)  # what the script swaps in is what a reload shows
    assert httpx.get(tail, params={"findings": 1}).json()["findings"] is None
