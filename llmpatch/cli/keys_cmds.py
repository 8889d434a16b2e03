"""`patch keys`: your signing keys and the public keys you trust."""

from __future__ import annotations

from pathlib import Path

import click

from ..keystore import KeyStore
from .output import emit_json, json_option, note


@click.group()
def keys():
    """Manage Ed25519 keys: generate signing keys, trust others' public keys.

    \b
      patch keys generate --label "acme release key"
      patch keys export 3f2a9c1e > acme.pub.pem     # give this to users
      patch keys import acme.pub.pem                # trust a publisher
    """


@keys.command()
@click.option("--label", default="", help="A name to recognise the key by.")
@json_option
def generate(label: str, as_json: bool):
    """Create a new signing key (kept in your config folder, mode 0600)."""
    info = KeyStore().generate(label)
    if as_json:
        emit_json(info.to_dict())
    else:
        click.echo(info.key_id)
        note(f"Created signing key {info.key_id[:16]} ({info.label}); share its public half with `patch keys export {info.key_id[:8]}`")


@keys.command("list")
@json_option
def list_keys(as_json: bool):
    """List trusted keys; `private` marks the ones you can sign with."""
    infos = KeyStore().list()
    if as_json:
        emit_json([i.to_dict() for i in infos])
        return
    if not infos:
        note("No keys yet; create one with `patch keys generate`")
    for info in infos:
        click.echo(f"{info.key_id[:16]}  {'private' if info.has_private else 'public '}  {info.label}")


@keys.command()
@click.argument("key_id")
@click.option("--private", is_flag=True, help="Export the private key (PKCS#8 PEM) instead of the public one.")
def export(key_id: str, private: bool):
    """Print a key as PEM on stdout."""
    store = KeyStore()
    click.echo((store.export_private(key_id) if private else store.export_public(key_id)).decode(), nl=False)


@keys.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--label", default="", help="A name to recognise the key by.")
@json_option
def import_key(file: Path, label: str, as_json: bool):
    """Trust a public key (or add a private PEM key to sign with)."""
    store = KeyStore()
    pem = file.read_bytes()
    info = store.import_private(pem, label) if b"PRIVATE KEY" in pem else store.import_public(pem, label)
    if as_json:
        emit_json(info.to_dict())
    else:
        click.echo(info.key_id)
        note(f"Imported key {info.key_id[:16]} ({'private' if info.has_private else 'public'}, {info.label})")
