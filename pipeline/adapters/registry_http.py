"""The registry HTTP API (distribution v2) for reads skopeo cannot bound: a manifest, and a blob
streamed so a caller can stop part-way. Does network I/O.

Honours the host's containers configuration as skopeo does: credentials from the containers
auth file (LAYERING_REGISTRY_AUTHFILE, `auths.<host>.auth` = base64 user:password, or an
`identitytoken`), answered to Basic and Bearer (token service) challenges; TLS verified unless
registries.conf marks the registry `insecure`, which (as containers/image does) allows HTTPS
without verification and then plain HTTP. Credentials go to the registry and its token realm
only: a redirect to another host (blob storage) is followed without them.

    client = RegistryHttp(authfile=..., registries_conf=...)
    body = client.get("quay.io", "openshift-release-dev/ocp-release", "manifests/4.16.0", accept)

Errors: refused, reset, timeouts and 5xx -> TemporaryError naming the registry; 401/403 ->
PermanentError pointing at the auth file; 404 -> RegistryNotFound.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import ssl
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from http.client import HTTPResponse
from pathlib import Path

from pipeline.core import redaction
from pipeline.core.errors import PermanentError, TemporaryError

TIMEOUT_SECONDS = 30
MAX_REDIRECTS = 5
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryNotFound(PermanentError):
    """The registry answered 404: no such repository, tag or blob."""


def insecure_registries(registries_conf: Path | None) -> frozenset[str]:
    """Locations registries.conf marks insecure (v2 `[[registry]] insecure = true`, and the
    v1 `[registries.insecure] registries = [...]` list)."""
    path = registries_conf or Path("/etc/containers/registries.conf")
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, ValueError):
        return frozenset()
    found: set[str] = set()
    for entry in document.get("registry", []) if isinstance(document.get("registry"), list) else []:
        if isinstance(entry, dict) and entry.get("insecure") is True:
            location = entry.get("location") or entry.get("prefix")
            if isinstance(location, str):
                found.add(location)
    legacy = document.get("registries", {})
    insecure = legacy.get("insecure", {}) if isinstance(legacy, dict) else {}
    listed = insecure.get("registries", []) if isinstance(insecure, dict) else []
    found.update(item for item in listed if isinstance(item, str))
    return frozenset(found)


def credentials(authfile: Path | None, host: str) -> tuple[str, str] | None:
    """(user, password) for `host` from a containers auth file; None without an entry."""
    if authfile is None:
        return None
    try:
        document = json.loads(authfile.read_text())
    except (OSError, ValueError):
        return None
    auths = document.get("auths") if isinstance(document, dict) else None
    if not isinstance(auths, dict):
        return None
    for key, entry in auths.items():
        bare = str(key).removeprefix("https://").removeprefix("http://").split("/", 1)[0]
        if bare != host or not isinstance(entry, dict):
            continue
        token = entry.get("identitytoken")
        if isinstance(token, str) and token:
            # containers/image's convention for an identity token: the user is "<token>"
            return ("<token>", token)
        auth = entry.get("auth")
        if isinstance(auth, str) and auth:
            try:
                user, _, password = base64.b64decode(auth).decode().partition(":")
            except ValueError:
                return None
            return (user, password)
    return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # followed by RegistryHttp itself, without credentials across hosts


class RegistryHttp:
    def __init__(
        self,
        *,
        authfile: Path | None = None,
        registries_conf: Path | None = None,
        timeout: float = TIMEOUT_SECONDS,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self._authfile = authfile
        self._insecure = insecure_registries(registries_conf)
        self._timeout = timeout
        self._secrets = secrets
        self._tokens: dict[tuple[str, str], str] = {}
        self._schemes: dict[str, str] = {}
        self._verified = urllib.request.build_opener(_NoRedirect)
        unverified = ssl.create_default_context()
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        self._unverified = urllib.request.build_opener(
            _NoRedirect, urllib.request.HTTPSHandler(context=unverified)
        )

    def is_insecure(self, host: str) -> bool:
        return host in self._insecure

    @contextlib.contextmanager
    def open(
        self, host: str, repository: str, path: str, accept: tuple[str, ...] = ()
    ) -> Iterator[HTTPResponse]:
        """GET /v2/<repository>/<path> on `host`, authenticated; the response, to stream."""
        response = self._get(host, repository, path, accept)
        try:
            yield response
        finally:
            response.close()

    def get(
        self, host: str, repository: str, path: str, accept: tuple[str, ...] = (), *, cap: int
    ) -> tuple[bytes, Mapping[str, str]]:
        """The whole body (at most `cap` bytes) and the headers of a GET."""
        with self.open(host, repository, path, accept) as response:
            body = response.read(cap + 1)
            if len(body) > cap:
                raise PermanentError(
                    f"registry {host}: {repository}/{path} is over {cap} bytes; refused"
                )
            return body, dict(response.headers.items())

    def _get(self, host: str, repository: str, path: str, accept: tuple[str, ...]) -> HTTPResponse:
        url_path = f"/v2/{repository}/{path}"
        headers = {"Accept": ", ".join(accept)} if accept else {}
        scope = f"repository:{repository}:pull"
        for attempt in range(2):
            token = self._tokens.get((host, scope))
            auth = {"Authorization": token} if token else {}
            status, response, challenge = self._request(host, url_path, {**headers, **auth})
            if response is not None:
                return response
            if status == 401 and attempt == 0 and challenge:
                self._tokens[(host, scope)] = self._answer(host, challenge, scope)
                continue
            if status in (401, 403):
                raise PermanentError(
                    f"registry {host} refused access to {repository} ({status}); check "
                    "LAYERING_REGISTRY_AUTHFILE"
                )
            if status == 404:
                raise RegistryNotFound(f"registry {host}: {repository}/{path} not found")
            if status == 429 or status >= 500:
                raise TemporaryError(f"registry {host} unavailable ({status}) for {repository}")
            raise PermanentError(f"registry {host}: {repository}/{path} answered {status}")
        raise PermanentError(f"registry {host} refused the credentials for {repository}")

    def _request(
        self, host: str, url_path: str, headers: Mapping[str, str]
    ) -> tuple[int, HTTPResponse | None, str]:
        """(status, the response when 200, the WWW-Authenticate challenge)."""
        url = f"{self._scheme(host)}://{host}{url_path}"
        sent = dict(headers)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                # a redirect target (blob storage) is verified unless it is insecure itself
                opener = self._opener(urllib.parse.urlsplit(url).netloc)
                response: HTTPResponse = opener.open(
                    urllib.request.Request(url, headers=sent),  # noqa: S310 (http/https only, checked)
                    timeout=self._timeout,
                )
                return 200, response, ""
            except urllib.error.HTTPError as exc:
                status = exc.code
                location = exc.headers.get("Location")
                challenge = exc.headers.get("WWW-Authenticate", "")
                exc.close()
                if status in (301, 302, 303, 307, 308) and location:
                    target = urllib.parse.urljoin(url, location)
                    if urllib.parse.urlsplit(target).scheme not in ("http", "https"):
                        raise PermanentError(
                            f"registry {host}: redirect to a non-HTTP URL refused"
                        ) from None
                    if urllib.parse.urlsplit(target).netloc != host:
                        sent = {k: v for k, v in sent.items() if k != "Authorization"}
                    url = target
                    continue
                return status, None, challenge
            except (OSError, urllib.error.URLError) as exc:
                raise TemporaryError(f"registry {host} unreachable: {self._scrub(exc)}") from None
        raise PermanentError(f"registry {host}: more than {MAX_REDIRECTS} redirects")

    def _opener(self, host: str) -> urllib.request.OpenerDirector:
        return self._unverified if self.is_insecure(host) else self._verified

    def _scheme(self, host: str) -> str:
        """https; for an insecure registry the first that answers of https and http."""
        if not self.is_insecure(host):
            return "https"
        if host not in self._schemes:
            self._schemes[host] = "http"
            with contextlib.suppress(OSError, urllib.error.URLError):
                self._unverified.open(f"https://{host}/v2/", timeout=self._timeout).close()
                self._schemes[host] = "https"
        return self._schemes[host]

    def _answer(self, host: str, challenge: str, scope: str) -> str:
        """The Authorization value answering a 401 challenge (Basic, or a Bearer token)."""
        scheme, _, params_text = challenge.partition(" ")
        login = credentials(self._authfile, host)
        if scheme.lower() == "basic":
            if login is None:
                raise PermanentError(
                    f"registry {host} needs credentials; add them to LAYERING_REGISTRY_AUTHFILE"
                )
            return "Basic " + base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
        if scheme.lower() != "bearer":
            raise PermanentError(f"registry {host}: unsupported auth challenge {scheme!r}")
        params = dict(_CHALLENGE_PARAM.findall(params_text))
        realm = params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise PermanentError(f"registry {host}: bearer challenge without a usable realm")
        query = {"scope": params.get("scope", scope)}
        if params.get("service"):
            query["service"] = params["service"]
        # the realm was checked to be http(s) above
        request = urllib.request.Request(f"{realm}?{urllib.parse.urlencode(query)}")  # noqa: S310
        if login is not None:
            basic = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {basic}")
        realm_host = urllib.parse.urlsplit(realm).netloc
        try:
            with self._opener(realm_host).open(request, timeout=self._timeout) as answer:
                document = json.loads(answer.read(1024 * 1024))
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code >= 500:
                raise TemporaryError(
                    f"registry {host}: token service answered {exc.code}"
                ) from None
            raise PermanentError(
                f"registry {host}: token service refused the credentials ({exc.code}); check "
                "LAYERING_REGISTRY_AUTHFILE"
            ) from None
        except (OSError, ValueError) as exc:
            raise TemporaryError(
                f"registry {host}: token service unreachable: {self._scrub(exc)}"
            ) from None
        token = document.get("token") or document.get("access_token")
        if not isinstance(token, str) or not token:
            raise PermanentError(f"registry {host}: token service answered without a token")
        return f"Bearer {token}"

    def _scrub(self, exc: BaseException) -> str:
        return redaction.scrub(str(exc), list(self._secrets))[-300:]
