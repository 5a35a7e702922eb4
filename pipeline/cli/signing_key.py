"""`layering signing-key create [--dir D] [--force]`: a new sigstore key pair for signed pushes
(adapters/signing_keys.py), with the settings and the Secret that use it. The passphrase is
written to its file and never printed."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.adapters import signing_keys
from pipeline.cli import EXIT_OK


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("signing-key", help="make the key that signs pushed images")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="write a new sigstore key pair and its passphrase",
        description=f"Write {signing_keys.PRIVATE_KEY_NAME} (encrypted ECDSA P-256 private key, "
        f"0600), {signing_keys.PUBLIC_KEY_NAME} (public key) and "
        f"{signing_keys.PASSPHRASE_NAME} (random passphrase, 0600) in the format skopeo and "
        "cosign read. An existing key is never replaced without --force.",
    )
    create.add_argument("--dir", type=Path, default=Path("."), help="default: this directory")
    create.add_argument("--force", action="store_true", help="replace an existing key")
    create.set_defaults(handler=run_create)


def run_create(args: argparse.Namespace) -> int:
    pair = signing_keys.create(args.dir, force=args.force)
    directory = pair.private_key.parent
    print(f"private key   {pair.private_key} (encrypted, mode 0600)")
    print(f"passphrase    {pair.passphrase_file} (mode 0600)")
    print(f"public key    {pair.public_key}")
    print("\nBuild workers sign their pushes with")
    print(f"  LAYERING_SIGNING_KEY={pair.private_key}")
    print(f"  LAYERING_SIGNING_PASSPHRASE_FILE={pair.passphrase_file}")
    print("and promotion and the gate trust")
    print(f"  LAYERING_SIGNING_PUBLIC_KEY={pair.public_key}")
    print("On OpenShift (deploy/), the Secret the build workers mount:")
    print(
        "  oc -n layering create secret generic layering-signing-key "
        + " ".join(
            f"--from-file={directory / name}"
            for name in (
                signing_keys.PRIVATE_KEY_NAME,
                signing_keys.PASSPHRASE_NAME,
                signing_keys.PUBLIC_KEY_NAME,
            )
        )
    )
    return EXIT_OK
