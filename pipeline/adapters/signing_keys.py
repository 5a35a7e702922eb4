"""Sigstore signing keys in the format skopeo (containers/image) and cosign read: an ECDSA P-256
key pair, the private key encrypted under a random passphrase. Does file I/O.

    signing_keys.create(Path("keys")) -> KeyPair(private_key=keys/cosign.key, ...)
    signing_keys.ensure(Path(".layering/signing"))  # `layering up`: made once, then reused

The private key is PEM "ENCRYPTED SIGSTORE PRIVATE KEY" whose body is the JSON envelope of
go-securesystemslib's `encrypted` package, which containers/image and cosign both decrypt:
the PKCS#8 DER sealed with NaCl secretbox (XSalsa20-Poly1305) under a 32-byte key derived from
the passphrase with scrypt (N=32768, r=8, p=1); `ciphertext` is the tag and the sealed
message, without the nonce, which has a field of its own. The public key is PKIX PEM. The
passphrase is in a file of its own, mode 0600 like the private key (read from there, as
skopeo's `--sign-passphrase-file` and cosign read it, so it is never on an argv or in a build's
environment).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.secret
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.core.errors import InputError, PermanentError

# the names cosign gives the files (`cosign generate-key-pair`, COSIGN_PASSWORD)
PRIVATE_KEY_NAME = "cosign.key"
PUBLIC_KEY_NAME = "cosign.pub"
PASSPHRASE_NAME = "cosign.password"  # noqa: S105 (a file name)
PEM_TYPE = "ENCRYPTED SIGSTORE PRIVATE KEY"
# containers/image also accepts keys cosign wrote before it was renamed
PEM_TYPES = (PEM_TYPE, "ENCRYPTED COSIGN PRIVATE KEY")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 32768, 8, 1
SALT_BYTES = 32


@dataclass(frozen=True)
class KeyPair:
    private_key: Path
    public_key: Path
    passphrase_file: Path


def paths(directory: Path) -> KeyPair:
    return KeyPair(
        private_key=directory / PRIVATE_KEY_NAME,
        public_key=directory / PUBLIC_KEY_NAME,
        passphrase_file=directory / PASSPHRASE_NAME,
    )


def create(directory: Path, *, force: bool = False) -> KeyPair:
    """A new key pair and passphrase in `directory`; InputError naming the file when one of
    them exists already (unless `force`: then they are replaced)."""
    pair = paths(directory)
    files = (pair.private_key, pair.public_key, pair.passphrase_file)
    existing = [path.name for path in files if path.exists() or path.is_symlink()]
    if existing and not force:
        raise InputError(
            f"{directory} holds a signing key already ({', '.join(existing)}); a new key would "
            "orphan every image signed with the old one: use another --dir, or --force to "
            "replace it"
        )
    directory.mkdir(parents=True, exist_ok=True)
    passphrase = secrets.token_urlsafe(32)
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write(pair.passphrase_file, passphrase.encode(), mode=0o600)
    _write(pair.private_key, encrypt(der, passphrase.encode()), mode=0o600)
    _write(pair.public_key, public, mode=0o644)
    return pair


def ensure(directory: Path) -> tuple[KeyPair, bool]:
    """The key pair in `directory`, made when none is there; (pair, made now). A directory
    holding only part of a pair is refused (PermanentError) rather than half replaced."""
    pair = paths(directory)
    files = (pair.private_key, pair.public_key, pair.passphrase_file)
    present = [path.is_file() for path in files]
    if all(present):
        return pair, False
    if any(present):
        missing = ", ".join(str(path) for path in files if not path.is_file())
        raise PermanentError(
            f"signing key in {directory} is incomplete ({missing} missing); restore it, or "
            f"remove {directory} to make a new key (images signed with the old one then fail "
            "verification)"
        )
    return create(directory), True


def encrypt(der: bytes, passphrase: bytes) -> bytes:
    """The PEM of `der` sealed under `passphrase` (go-securesystemslib's envelope)."""
    salt = secrets.token_bytes(SALT_BYTES)
    box = nacl.secret.SecretBox(_derive(passphrase, salt))
    nonce = secrets.token_bytes(nacl.secret.SecretBox.NONCE_SIZE)
    sealed = box.encrypt(der, nonce)
    envelope = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
            "salt": _b64(salt),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(sealed.ciphertext),
    }
    body = json.dumps(envelope, separators=(",", ":")).encode()
    return _pem(PEM_TYPE, body)


def decrypt(pem: bytes, passphrase: bytes, *, name: str = "signing key") -> bytes:
    """The PKCS#8 DER inside an encrypted sigstore key; PermanentError naming `name` when the
    file is not one or the passphrase does not open it (the passphrase is never shown)."""
    lines = pem.decode(errors="replace").strip().splitlines()
    if len(lines) < 3 or lines[0] not in {f"-----BEGIN {t}-----" for t in PEM_TYPES}:
        raise PermanentError(
            f"{name} is not an encrypted sigstore private key (expected a PEM block "
            f"'{PEM_TYPE}'; `layering signing-key create` writes one)"
        )
    try:
        envelope = json.loads(base64.b64decode("".join(lines[1:-1])))
        kdf, cipher = envelope["kdf"], envelope["cipher"]
        if kdf["name"] != "scrypt" or cipher["name"] != "nacl/secretbox":
            raise ValueError(f"unsupported kdf {kdf['name']!r} or cipher {cipher['name']!r}")
        params = kdf["params"]
        key = _derive(
            passphrase,
            base64.b64decode(kdf["salt"]),
            n=int(params["N"]),
            r=int(params["r"]),
            p=int(params["p"]),
        )
        nonce = base64.b64decode(cipher["nonce"])
        ciphertext = base64.b64decode(envelope["ciphertext"])
    except (ValueError, KeyError, TypeError) as exc:
        raise PermanentError(f"{name}: unreadable encrypted key ({exc})") from None
    try:
        return nacl.secret.SecretBox(key).decrypt(ciphertext, nonce)
    except (nacl.exceptions.CryptoError, ValueError):
        raise PermanentError(f"{name}: the passphrase does not decrypt it") from None


def load(private_key: Path, passphrase_file: Path) -> ec.EllipticCurvePrivateKey:
    """The signing key, opened with the passphrase in its file; PermanentError naming the
    setting that is wrong (LAYERING_SIGNING_KEY or LAYERING_SIGNING_PASSPHRASE_FILE), never
    the passphrase."""
    try:
        pem = private_key.read_bytes()
    except OSError as exc:
        raise PermanentError(
            f"LAYERING_SIGNING_KEY: cannot read {private_key}: {exc.strerror}"
        ) from None
    try:
        # the file's first line, as skopeo and cosign read a passphrase file
        passphrase = next(iter(passphrase_file.read_bytes().splitlines()), b"")
    except OSError as exc:
        raise PermanentError(
            f"LAYERING_SIGNING_PASSPHRASE_FILE: cannot read {passphrase_file}: {exc.strerror}"
        ) from None
    try:
        der = decrypt(pem, passphrase, name=f"LAYERING_SIGNING_KEY {private_key}")
    except PermanentError as exc:
        if "passphrase" in str(exc):
            raise PermanentError(
                f"{exc}: check LAYERING_SIGNING_PASSPHRASE_FILE ({passphrase_file})"
            ) from None
        raise
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PermanentError(f"LAYERING_SIGNING_KEY {private_key}: not an ECDSA key")
    return key


def _derive(
    passphrase: bytes, salt: bytes, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P
) -> bytes:
    if not (2 <= n <= 1 << 20 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError(f"scrypt parameters out of bounds (N={n}, r={r}, p={p})")
    # scrypt needs 128 * N * r bytes (32 MiB here), just over hashlib's default bound
    return hashlib.scrypt(
        passphrase, salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + (1 << 20), dklen=32
    )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _pem(kind: str, body: bytes) -> bytes:
    text = _b64(body)
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return f"-----BEGIN {kind}-----\n{chr(10).join(lines)}\n-----END {kind}-----\n".encode()


def _write(path: Path, content: bytes, *, mode: int) -> None:
    """Write `path` with `mode` from its creation on (never readable by others meanwhile),
    through a staging file renamed over it (a crash leaves the old file or the new one)."""
    staging = path.with_name(f".{path.name}.new")
    staging.unlink(missing_ok=True)
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.fchmod(descriptor, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content)
    staging.replace(path)
