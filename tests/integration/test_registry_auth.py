"""The registry HTTP client (adapters/registry_http.py) against a registry's auth handshake
served over HTTP by pytest-httpserver (docker-registry here has no token service): the auth
file's credentials answer a Basic challenge and get a Bearer token from the realm, and a blob
redirected to another host (object storage) is fetched there without them."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from pipeline.adapters import registry_http, release_payload
from pipeline.core.errors import PermanentError

USER, PASSWORD, TOKEN = "robot", "s3cret-pull-password", "issued-token-0123456789"
NODE = "quay.example/rhcos@sha256:" + "d" * 64


def _layer() -> bytes:
    references = json.dumps(
        {
            "kind": "ImageStream",
            "spec": {
                "tags": [{"name": "rhel-coreos", "from": {"kind": "DockerImage", "name": NODE}}]
            },
        }
    ).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        entry = tarfile.TarInfo("release-manifests/image-references")
        entry.size = len(references)
        archive.addfile(entry, io.BytesIO(references))
    return out.getvalue()


@pytest.fixture
def servers() -> Iterator[tuple[HTTPServer, HTTPServer]]:
    registry, storage = HTTPServer(host="127.0.0.1", port=0), HTTPServer(host="127.0.0.1", port=0)
    registry.start()
    storage.start()
    yield registry, storage
    registry.clear()
    registry.stop()
    storage.clear()
    storage.stop()


def _client(tmp_path: Path, registry: HTTPServer) -> registry_http.RegistryHttp:
    host = f"127.0.0.1:{registry.port}"
    conf = tmp_path / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{host}"\ninsecure = true\n')
    authfile = tmp_path / "auth.json"
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    authfile.write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return registry_http.RegistryHttp(authfile=authfile, registries_conf=conf, secrets=(PASSWORD,))


@pytest.mark.parametrize("scheme", ["Bearer", "Basic"])
def test_challenges_are_answered_with_the_auth_file(
    scheme: str, tmp_path: Path, servers: tuple[HTTPServer, HTTPServer]
) -> None:
    registry, storage = servers
    layer = _layer()
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest, "size": len(layer)}],
        }
    ).encode()  # fmt: skip
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    expected = f"Bearer {TOKEN}" if scheme == "Bearer" else basic
    realm = registry.url_for("/token")
    challenge = (
        f'Bearer realm="{realm}",service="registry",scope="repository:ocp/release:pull"'
        if scheme == "Bearer"
        else 'Basic realm="registry"'
    )
    seen_at_storage: list[str | None] = []

    def guarded(body: bytes | None, redirect: bool = False) -> Callable[[Request], Response]:
        def handle(request: Request) -> Response:
            if request.headers.get("Authorization") != expected:
                return Response(status=401, headers={"WWW-Authenticate": challenge})
            if redirect:
                return Response(status=307, headers={"Location": storage.url_for("/blob")})
            return Response(body, status=200)

        return handle

    def token(request: Request) -> Response:
        assert request.headers.get("Authorization") == basic
        assert request.args.get("service") == "registry"
        return Response(json.dumps({"token": TOKEN}), content_type="application/json")

    def blob(request: Request) -> Response:
        seen_at_storage.append(request.headers.get("Authorization"))
        return Response(layer, status=200)

    registry.expect_request("/v2/").respond_with_data("{}")
    registry.expect_request("/token").respond_with_handler(token)
    registry.expect_request("/v2/ocp/release/manifests/4.99.0").respond_with_handler(
        guarded(manifest)
    )
    registry.expect_request(f"/v2/ocp/release/blobs/{layer_digest}").respond_with_handler(
        guarded(None, redirect=True)
    )
    storage.expect_request("/blob").respond_with_handler(blob)

    payloads = release_payload.ReleasePayloads(_client(tmp_path, registry))
    found = payloads.node_image(f"127.0.0.1:{registry.port}/ocp/release:4.99.0")
    assert (found.tag, str(found.image)) == ("rhel-coreos", NODE)
    assert payloads.last_read.blobs == [layer_digest]
    # the storage host got no registry credentials
    assert seen_at_storage == [None]


def test_refused_credentials_point_at_the_auth_file(
    tmp_path: Path, servers: tuple[HTTPServer, HTTPServer]
) -> None:
    registry, _ = servers
    registry.expect_request("/v2/").respond_with_data("{}")
    registry.expect_request("/v2/ocp/release/manifests/1").respond_with_response(
        Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})
    )
    client = _client(tmp_path, registry)
    with pytest.raises(PermanentError) as caught:
        client.get(f"127.0.0.1:{registry.port}", "ocp/release", "manifests/1", cap=1024)
    assert "check LAYERING_REGISTRY_AUTHFILE" in str(caught.value)
    assert PASSWORD not in str(caught.value)
