"""Commands on patch files that need no model: inspect, sign, verify-file."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import SignatureError
from ..fingerprint import short
from ..keystore import KeyStore
from ..patchfile import PatchFile, read_patch
from ..signing import SIGNATURE_SUFFIX, SignatureDocument, sign_patch, verify_patch_signature
from ..paths import atomic_write_bytes
from .output import emit_json, json_option, note


def signature_path_for(patch_path: Path) -> Path:
    return patch_path.with_name(patch_path.name + SIGNATURE_SUFFIX)


def check_signature(patch: PatchFile, sig_path: Path) -> str:
    """Verify `sig_path` against the local trusted keys; return the signer's key id."""
    if not sig_path.exists():
        raise SignatureError(f"no signature at `{sig_path}`", hint="sign the file with `patch sign FILE`")
    document = SignatureDocument.from_json(sig_path.read_bytes())
    return verify_patch_signature(patch, document, KeyStore().trusted_keys())


@click.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def inspect_cmd(file: Path, as_json: bool):
    """Validate a patch file and show its manifest.

    Checks the format strictly (header caps, names, semver, dtype and shape against the
    manifest, finite values). If `FILE.sig` exists beside it, the signature is checked
    against your trusted keys too; a bad signature fails the command.
    """
    patch = read_patch(file)
    sig_path = signature_path_for(file)
    signer = check_signature(patch, sig_path) if sig_path.exists() else None
    m = patch.manifest
    if as_json:
        emit_json({"file": str(file), "sha256": patch.sha256, "size": patch.size, "signer_key_id": signer, "manifest": m.to_dict()})
        return
    rows = [
        ("name", f"{m.name}@{m.version}"),
        ("domains", ", ".join(m.domains) or "-"),
        ("prefix", f"{m.n_virtual_tokens} virtual tokens x {m.hidden_size} on the input embeddings" if m.placement == "input"
                   else f"{m.n_virtual_tokens} virtual tokens of keys and values at {m.kv_layout} (hidden size {m.hidden_size})"),
        ("parameters", f"{m.n_virtual_tokens * m.prefix_width:,} ({m.dtype})"),
        ("base model", m.base_model.name or "-"),
        ("architecture", m.base_model.architecture),
        ("weights", m.base_model.weights),
        ("depends on", ", ".join(f"{r.name} {r.spec}" for r in m.dependencies) or "-"),
        ("conflicts", ", ".join(f"{r.name} {r.spec}" for r in m.conflicts) or "-"),
        ("license", m.license or "-"),
        ("sha256", patch.sha256),
        ("size", f"{patch.size:,} bytes"),
        ("signature", f"valid, key {signer[:16]}" if signer else "none (no .sig file beside it)"),
    ]
    if m.description:
        rows.append(("description", m.description))
    for key, value in m.evaluation.items():
        rows.append((f"eval.{key}", str(value)))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", "key_prefix", default="", help="Signing key id (prefix of 8+ hex digits); default: your only key.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Where to write the signature [default: FILE.sig].")
@json_option
def sign(file: Path, key_prefix: str, output: Path | None, as_json: bool):
    """Sign a patch file with one of your Ed25519 keys, writing `FILE.sig`.

    The signature binds the file's sha256 and size to its name and version.
    """
    patch = read_patch(file)
    document = sign_patch(patch, KeyStore().private_key(key_prefix))
    output = output or signature_path_for(file)
    atomic_write_bytes(output, document.to_json().encode())
    if as_json:
        emit_json({"file": str(file), "signature": str(output), "key_id": document.key_id, "sha256": patch.sha256})
    else:
        note(f"Signed `{file}` ({patch.manifest.name}@{patch.manifest.version}) with key {document.key_id[:16]} -> `{output}`")


@click.command("verify-file")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--signature", "sig", type=click.Path(dir_okay=False, path_type=Path), help="Signature document [default: FILE.sig].")
@click.option("--model", help="Also check the patch was built for this model (folder, .gguf, Hub id or `smollm2`).")
@json_option
def verify_file(file: Path, sig: Path | None, model: str | None, as_json: bool):
    """Check a patch file's format and signature (fails closed), and optionally its base model."""
    patch = read_patch(file)
    signer = check_signature(patch, sig or signature_path_for(file))
    result = {"file": str(file), "sha256": patch.sha256, "signer_key_id": signer, "valid": True}
    if model:
        from ..model.loading import fingerprint_model
        from ..model.runtime import check_compatible

        location, fingerprint = fingerprint_model(model)
        check_compatible(patch, fingerprint, patch.manifest.hidden_size)
        result["model"] = {"name": location.display_name, **fingerprint.to_dict()}
    if as_json:
        emit_json(result)
    else:
        m = patch.manifest
        note(f"`{file}` is a valid patch {m.name}@{m.version}, signed by key {signer[:16]}")
        if model:
            note(f"built for this model ({short(m.base_model.weights)})")
