"""Real services for tests and benchmarks: each starts on a free loopback port in a temporary
directory and is stopped by its PID. Used by tests/conftest.py and tests/bench/*.py."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, *, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def stop_process(
    process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 10
) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def start(
    argv: Sequence[str], *, log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a process in its own process group (so stop_process reaches its children)."""
    handle = log.open("ab")
    return subprocess.Popen(
        list(argv),
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )


@dataclass
class RedisServer:
    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    password: str | None = None  # requirepass: the URL then carries it (a secret to keep out)
    append_only: bool = False  # an AOF fsynced on every write: a restart on the port keeps all
    tls: TlsFiles | None = None  # TLS only (no plain port), clients checked against tls.ca
    replica_of: RedisServer | None = None  # a replica of that server (same password)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls is not None:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.ca}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [
            shutil.which("redis-server") or "redis-server",
            *(("--port", str(self.port)) if self.tls is None else self.tls.argv(self.port)),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *(("--appendonly", "yes", "--appendfsync", "always") if self.append_only else ()),
            *(() if self.append_only else ("--appendonly", "no")),
            "--dir",
            str(self.directory),
        ]
        lines = []
        if self.password:
            # masterauth too: Sentinel may make any server a replica of another
            lines += [f"requirepass {self.password}", f"masterauth {self.password}"]
        if self.replica_of is not None:
            lines.append(f"replicaof 127.0.0.1 {self.replica_of.port}")
        if lines:
            # a config file, not argv: build steps under chroot read every process's argv
            config = self.directory / "redis.conf"
            config.touch(mode=0o600)
            config.write_text("\n".join(lines) + "\n")
            argv.insert(1, str(config))
        self.process = start(argv, log=self.directory / "redis.log")
        wait_for_port(self.port, process=self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


@dataclass(frozen=True)
class TlsFiles:
    """A test CA and a server certificate it signed for 127.0.0.1 and localhost (PEM files)."""

    ca: Path
    cert: Path
    key: Path

    def argv(self, port: int) -> list[str]:
        """redis-server's TLS-only listener on `port`; clients need no certificate of their own."""
        return [
            *("--port", "0", "--tls-port", str(port)),
            *("--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key)),
            *("--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no"),
        ]

    @classmethod
    def generate(cls, directory: Path) -> TlsFiles:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        directory.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)

        def certificate(
            name: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None, ca: bool
        ) -> x509.CertificateBuilder:
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
            return (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(issuer or subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            )

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = certificate("layering test CA", ca_key, None, True).sign(ca_key, hashes.SHA256())
        server_key = ec.generate_private_key(ec.SECP256R1())
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        server_cert = (
            certificate("127.0.0.1", server_key, ca_cert.subject, False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        files = cls(directory / "ca.pem", directory / "server.pem", directory / "server.key")
        files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        files.cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
        files.key.touch(mode=0o600)
        files.key.write_bytes(
            server_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return files


@dataclass
class Sentinel:
    """A Redis Sentinel (`redis-server CONF --sentinel`) monitoring `master` as `master_name`.
    Its config file is 0600 and holds both passwords (sentinel rewrites it, so it stays
    writable); `password` is the Sentinel's own requirepass."""

    directory: Path
    master: RedisServer
    master_name: str = "mymaster"
    password: str | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.master.password}@" if self.master.password else ""
        own = f"&sentinel_password={self.password}" if self.password else ""
        return f"sentinel://{auth}127.0.0.1:{self.port}/0?master_name={self.master_name}{own}"

    def start(self) -> Sentinel:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = self.master_name
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.directory}",
            f"sentinel monitor {name} 127.0.0.1 {self.master.port} 1",
            f"sentinel down-after-milliseconds {name} 1000",
            f"sentinel failover-timeout {name} 5000",
        ]
        if self.master.password:
            lines.append(f"sentinel auth-pass {name} {self.master.password}")
        if self.password:
            lines.append(f"requirepass {self.password}")
        config = self.directory / "sentinel.conf"
        config.touch(mode=0o600)
        config.write_text("\n".join(lines) + "\n")
        argv = [shutil.which("redis-server") or "redis-server", str(config), "--sentinel"]
        self.process = start(argv, log=self.directory / "sentinel.log")
        wait_for_port(self.port, process=self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


@dataclass
class Registry:
    """A real distribution (docker-registry) on plain HTTP, marked insecure in a registries.conf."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def registries_conf(self) -> Path:
        return self.directory / "registries.conf"

    def start(self) -> Registry:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log: {level: warn}\n"
            "storage:\n"
            f"  filesystem: {{rootdirectory: '{self.directory / 'data'}'}}\n"
            "  delete: {enabled: true}\n"
            f"http: {{addr: '{self.host}'}}\n"
        )
        self.registries_conf.write_text(
            f'[[registry]]\nlocation = "{self.host}"\ninsecure = true\n'
        )
        self.process = start(
            ["docker-registry", "serve", str(config)], log=self.directory / "registry.log"
        )
        wait_for_port(self.port, process=self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    @property
    def log(self) -> Path:
        return self.directory / "registry.log"

    def log_size(self) -> int:
        """A mark: pass it to `requests(since=)` to see only what came after."""
        return self.log.stat().st_size if self.log.exists() else 0

    def requests(self, since: int = 0) -> list[tuple[str, str, int]]:
        """(method, path with query, status) of every request in the registry's access log
        (distribution writes it in combined format to stdout, kept in registry.log)."""
        if not self.log.exists():
            return []
        with self.log.open("rb") as handle:
            handle.seek(since)
            text = handle.read().decode(errors="replace")
        found = []
        for match in _ACCESS_LINE.finditer(text):
            found.append((match["method"], match["path"], int(match["status"])))
        return found


_ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>/v2/\S*) HTTP/[0-9.]+" (?P<status>\d{3}) ')


def unmount_under(directory: Path) -> None:
    """Unmount what buildah's overlay storage left mounted under `directory` (containers/storage
    keeps `<root>/overlay` bind-mounted on itself after buildah exits), deepest first, so the
    directory can be removed."""
    prefix = str(directory.resolve()).rstrip("/") + "/"
    with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
        points = [line.split()[4] for line in mounts]
    for point in sorted({p for p in points if p.startswith(prefix)}, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def tool_missing(*tools: str) -> list[str]:
    return [tool for tool in tools if shutil.which(tool) is None]
