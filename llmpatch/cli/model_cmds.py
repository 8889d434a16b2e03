"""Commands that need a base model: new, fingerprint, generate, export-peft, import-peft.
torch and transformers are imported inside the commands, so `patch --help` stays fast."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import click

from ..manifest import BaseModelRef, Manifest, canonical_json
from ..patchfile import read_patch, write_patch
from .file_cmds import check_signature, signature_path_for
from .output import emit_json, json_option, note

MODEL_HELP = "Base model: a Hugging Face folder, a .gguf file, a Hub id (org/name), or `smollm2` (bundled)."


def _set_threads(threads: int | None) -> None:
    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)  # oversubscription hurts on small machines


def _load(model: str):
    from ..model.loading import load_model

    note(f"Loading `{model}`...")
    return load_model(model)


def _manifest_options(func):
    for option in reversed(
        [
            click.option("--name", required=True, help="Patch name: letters, digits, `-`, `_`; starts with a letter."),
            click.option("--version", "version", required=True, help="Semantic version, e.g. 0.1.0."),
            click.option("--domain", "domains", multiple=True, help="Safety domain(s): toxicity, bias, harmfulness, ..."),
            click.option("--license", "license_", default="", help="License of the patch, e.g. Apache-2.0."),
            click.option("--description", default="", help="One paragraph on what the patch does."),
            click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Patch file to write (.safetensors)."),
            click.option("--dtype", type=click.Choice(["F32", "F16", "BF16"]), default="F32", show_default=True, help="Storage dtype of the prefix."),
            click.option("--sign/--no-sign", default=False, help="Also write FILE.sig with your signing key."),
            click.option("--key", "key_prefix", default="", help="Signing key id for --sign [default: your only key]."),
        ]
    ):
        func = option(func)
    return func


def _write_and_report(manifest: Manifest, prefix, output: Path, sign: bool, key_prefix: str, as_json: bool) -> None:
    patch = write_patch(output, manifest, prefix)
    signature = None
    if sign:
        from ..keystore import KeyStore
        from ..paths import atomic_write_bytes
        from ..signing import sign_patch

        document = sign_patch(patch, KeyStore().private_key(key_prefix))
        signature = signature_path_for(output)
        atomic_write_bytes(signature, document.to_json().encode())
    if as_json:
        emit_json({"file": str(output), "sha256": patch.sha256, "size": patch.size, "signature": str(signature) if signature else None, "manifest": manifest.to_dict()})
    else:
        note(f"Wrote `{output}`: {manifest.name}@{manifest.version}, {manifest.n_virtual_tokens} x {manifest.prefix_width}"
             f"{' (keys and values)' if manifest.placement == 'kv' else ''} ({patch.size:,} bytes)")
        if signature:
            note(f"Signed -> `{signature}`")


@click.command()
@click.option("--model", required=True, help=MODEL_HELP)
@click.option("--text", required=True, help="The safety instruction whose token embeddings start the prefix.")
@click.option("-n", "--n-virtual-tokens", default=50, show_default=True, help="Prefix length in virtual tokens.")
@_manifest_options
@json_option
def new(model, text, n_virtual_tokens, name, version, domains, license_, description, output, dtype, sign, key_prefix, as_json):
    """Make a patch from a safety instruction (the paper's semantic initialisation).

    The instruction's token embeddings, repeated or cut to N virtual tokens, become the
    prefix; train it further with `patch train`. Example:

    \b
      patch new --model smollm2 --text "You are a careful assistant. Refuse harmful requests." \\
                -n 50 --name refusal --version 0.1.0 --domain harmfulness -o refusal.safetensors
    """
    from ..model.init import prefix_from_text

    loaded = _load(model)
    prefix = prefix_from_text(loaded.model, loaded.tokenizer, text, n_virtual_tokens)
    manifest = Manifest(
        name=name,
        version=version,
        base_model=BaseModelRef(loaded.fingerprint.architecture, loaded.fingerprint.weights, loaded.location.display_name),
        n_virtual_tokens=n_virtual_tokens,
        hidden_size=prefix.shape[1],
        dtype=dtype,
        domains=tuple(domains),
        provenance={
            "method": "semantic-init",
            "init_text": text,
            "config_digest": "sha256:" + hashlib.sha256(canonical_json({"text": text, "n": n_virtual_tokens}).encode()).hexdigest(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        license=license_,
        description=description,
    )
    _write_and_report(manifest, prefix, output, sign, key_prefix, as_json)


@click.command()
@click.argument("model")
@json_option
def fingerprint(model: str, as_json: bool):
    """Show a base model's architecture and weights fingerprints.

    MODEL is a Hugging Face folder, a .gguf file, a Hub id or `smollm2`. The result is
    cached per file identity (path, size, mtime), so the second call is instant.
    """
    from ..model.loading import fingerprint_model

    started = time.perf_counter()
    location, result = fingerprint_model(model)
    elapsed = time.perf_counter() - started
    if as_json:
        emit_json({"model": location.display_name, "folder": str(location.folder), **result.to_dict(), "seconds": round(elapsed, 3)})
    else:
        click.echo(f"architecture  {result.architecture}")
        click.echo(f"weights       {result.weights}")
        note(f"`{location.display_name}` in {elapsed:.2f}s")


def _load_patch_set(files: tuple[Path, ...]):
    patches = []
    for file in files:
        patch = read_patch(file)
        if signature_path_for(file).exists():
            check_signature(patch, signature_path_for(file))
        else:
            note(f"warning: `{file}` is unsigned; its origin is not verified")
        patches.append(patch)
    return patches


@click.command("generate")
@click.option("--model", required=True, help=MODEL_HELP)
@click.option("--patch", "patch_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path), help="Patch file; repeat to compose, in order.")
@click.option("--compare", is_flag=True, help="Also generate without patches, side by side.")
@click.option("--force", is_flag=True, help="Apply patches built for other weights (never another hidden size).")
@click.option("--max-new-tokens", default=64, show_default=True)
@click.option("--sample/--greedy", default=False, help="Sample instead of greedy decoding.")
@click.option("--temperature", default=1.0, show_default=True)
@click.option("--top-k", default=0, show_default=True, help="0 = off.")
@click.option("--top-p", default=1.0, show_default=True, help="1.0 = off.")
@click.option("--repetition-penalty", default=1.0, show_default=True)
@click.option("--seed", type=int, help="Seed for sampling, for reproducible output.")
@click.option("--system", default=None, help="A system prompt (the fixed-prompt baseline).")
@click.option("--raw", is_flag=True, help="Do not wrap prompts in the model's chat template.")
@click.option("--threads", type=int, help="torch threads [default: all cores].")
@click.argument("prompts", nargs=-1, required=True)
@json_option
def generate_cmd(model, patch_files, compare, force, max_new_tokens, sample, temperature, top_k, top_p, repetition_penalty, seed, system, raw, threads, prompts, as_json):
    """Run a model with one or several patches applied (prefixes concatenated in order).

    Several PROMPTS run as one batch. Example:

    \b
      patch generate --model smollm2 --patch refusal.safetensors --compare "How do I hotwire a car?"
    """
    from ..model.generation import SamplingConfig, encode_prompt, generate
    from ..model.runtime import PatchedModel

    _set_threads(threads)
    patches = _load_patch_set(patch_files)
    loaded = _load(model)
    patched = PatchedModel(loaded.model, loaded.tokenizer, loaded.fingerprint)
    patched.check(patches, force=force)
    cfg = SamplingConfig(max_new_tokens, sample, temperature, top_k, top_p, repetition_penalty, seed)
    ids = [encode_prompt(loaded.tokenizer, p, chat=not raw, system=system) for p in prompts]
    variants = [("patched", patches)] + ([("unpatched", [])] if compare else [])
    results = {}
    for label, patch_set in variants:
        started = time.perf_counter()
        outputs = generate(patched, ids, [patch_set] * len(ids), cfg)
        results[label] = (outputs, time.perf_counter() - started)
    if as_json:
        emit_json(
            {
                "model": loaded.location.display_name,
                "patches": [f"{p.manifest.name}@{p.manifest.version}" for p in patches],
                "results": [
                    {"prompt": prompt, **{label: results[label][0][i].text for label in results}}
                    for i, prompt in enumerate(prompts)
                ],
                "seconds": {label: round(r[1], 3) for label, r in results.items()},
            }
        )
        return
    for i, prompt in enumerate(prompts):
        click.echo(f"> {prompt}")
        for label in results:
            prefix = f"[{label}] " if compare else ""
            click.echo(f"{prefix}{results[label][0][i].text}")
        click.echo()


@click.command("export-peft")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@json_option
def export_peft(file: Path, folder: Path, as_json: bool):
    """Write a patch as a PEFT adapter folder: prompt tuning, or prefix tuning for a kv patch
    (loads with PeftModel.from_pretrained)."""
    from ..model.peft_interop import export_peft as do_export

    patch = read_patch(file)
    do_export(patch, folder)
    if as_json:
        emit_json({"file": str(file), "folder": str(folder)})
    else:
        note(f"Exported `{file}` as a PEFT adapter in `{folder}`")


def _hidden_size(model_folder: Path) -> int:
    config = json.loads((model_folder / "config.json").read_text())
    config = config.get("text_config") or config
    return config.get("hidden_size") or config["n_embd"]


@click.command("import-peft")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", required=True, help=MODEL_HELP + " The adapter's base model.")
@_manifest_options
@json_option
def import_peft(folder, model, name, version, domains, license_, description, output, dtype, sign, key_prefix, as_json):
    """Turn a PEFT prompt-tuning (or prefix-tuning, as a kv patch) adapter into a patch bound to
    its base model's fingerprint."""
    from ..model.loading import fingerprint_model
    from ..model.peft_interop import import_peft as do_import
    from ..model.peft_interop import kv_layout_of

    prefix, config = do_import(folder)
    location, fp = fingerprint_model(model)
    layout = kv_layout_of(config)  # a prefix-tuning adapter becomes a kv patch
    shape = {"hidden_size": prefix.shape[1]} if layout is None else {"hidden_size": _hidden_size(location.folder), "placement": "kv", "kv_layout": layout}
    manifest = Manifest(
        name=name,
        version=version,
        base_model=BaseModelRef(fp.architecture, fp.weights, location.display_name),
        n_virtual_tokens=prefix.shape[0],
        **shape,
        dtype=dtype,
        domains=tuple(domains),
        provenance={"method": "peft-import", "peft_version": str(config.get("peft_version", ""))},
        license=license_,
        description=description,
    )
    _write_and_report(manifest, prefix, output, sign, key_prefix, as_json)
