"""`patch install`, `remove`, `upgrade`, `list`, `verify`, `why`, `lock`, `sync`, `search`,
`info`, `publish`, `yank`, `run`, `push`, and `patch registry add/list/remove`.

A thin layer: options become an `Installer` (or a `RegistryClient`), results go to stdout
(text, or `--json`), messages and progress to stderr. Errors are `LLMPatchError`s, printed
with their hint and exit code by `llmpatch.cli.run`:
0 ok, 1 error, 2 usage, 3 invalid file, 4 verification failed, 5 resolution impossible.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..cli.output import emit_json, json_option, note, progress
from ..errors import LLMPatchError

project_option = click.option("--project", "project_dir", type=click.Path(file_okay=False, path_type=Path),
                              help="Folder holding `patches.toml` (default: nearest one above, else per-model state).")
model_option = click.option("--model", "model", help="Base model: folder, .gguf, Hub id or `smollm2`.")
offline_option = click.option("--offline", is_flag=True, help="Use only the lockfile and the cache; never touch the network.")
registry_option = click.option("--registry", "registry_name", help="Configured registry to use (default: `default`).")


def _installer(project_dir, model, offline=False, registry_name=None, *, create=False):
    """The installer for this command, holding the project's lock until the command ends."""
    from ._install import Installer
    from ._project import open_project, project_lock

    project = open_project(project_dir, model, create=create)
    if registry_name:
        project.registry = registry_name
    ctx = click.get_current_context()
    ctx.with_resource(project_lock(project, on_wait=note))
    if project.path.is_file():  # read again under the lock: another command may just have written it
        project = open_project(project.root, model)
        if registry_name:
            project.registry = registry_name
    return Installer(project, offline=offline, progress=lambda it, total, desc: progress(it, total=total, desc=desc))


def _report(outcome, as_json: bool, verb: str) -> None:
    for warning in outcome.warnings:
        note(f"warning: {warning}")
    if as_json:
        emit_json(outcome.to_dict())
        return
    changed = [c for c in outcome.changes if c.action != "unchanged"]
    for c in changed:
        sign = {"added": "+", "removed": "-", "changed": "~"}[c.action]
        shown = f"{c.old} -> {c.new}" if c.action == "changed" else (c.new or c.old)
        click.echo(f" {sign} {c.name} {shown}")
    total = sum(p.n_virtual_tokens for p in outcome.lock.patches)
    note(f"{verb} {len(outcome.lock.patches)} patch(es), {total} virtual tokens, for `{outcome.lock.model}`"
         + ("" if changed else " (nothing changed)"))


# --------------------------------------------------------------------- project commands

@click.command("install")
@click.argument("specs", nargs=-1, required=True)
@model_option
@project_option
@registry_option
@offline_option
@json_option
def install(specs, model, project_dir, registry_name, offline, as_json):
    """Resolve, verify and install patches: `toxicity@1.2`, `harmfulness@^1`, `hf://ORG/NAME@REV`.

    Every file is checked before anything changes: the registry's signed TUF metadata,
    the publisher signature by the key authorised for the name, sha256 and size, and the
    base-model fingerprint. The lockfile is written last.
    """
    from ._specs import PatchRequest

    installer = _installer(project_dir, model, offline, registry_name, create=True)
    hub = [s for s in specs if s.startswith("hf://")]
    requests = [PatchRequest.parse(s) for s in specs if not s.startswith("hf://")]
    if hub:
        from ._hub import install_from_hub

        for ref in hub:
            install_from_hub(installer, ref)
    outcome = installer.install(requests)
    _report(outcome, as_json, "Installed")


@click.command("remove")
@click.argument("names", nargs=-1, required=True)
@model_option
@project_option
@json_option
def remove(names, model, project_dir, as_json):
    """Remove patches (and dependencies nothing else needs). Works offline."""
    outcome = _installer(project_dir, model).remove(list(names))
    _report(outcome, as_json, "Now")


@click.command("upgrade")
@click.argument("names", nargs=-1)
@model_option
@project_option
@registry_option
@json_option
def upgrade(names, model, project_dir, registry_name, as_json):
    """Move patches (all, or the NAMES given) to the newest versions their ranges allow."""
    outcome = _installer(project_dir, model, False, registry_name).upgrade(list(names))
    _report(outcome, as_json, "Upgraded to")


@click.command("lock")
@model_option
@project_option
@registry_option
@json_option
def lock(model, project_dir, registry_name, as_json):
    """Resolve `patches.toml` and write `patches.lock`, keeping locked versions that still fit."""
    outcome = _installer(project_dir, model, False, registry_name).lock_only()
    _report(outcome, as_json, "Locked")


@click.command("sync")
@click.option("--frozen", is_flag=True, help="Fail if the lockfile does not match `patches.toml`; never rewrite it.")
@model_option
@project_option
@registry_option
@offline_option
@json_option
def sync(frozen, model, project_dir, registry_name, offline, as_json):
    """Install exactly what `patches.lock` says, verifying every file."""
    outcome = _installer(project_dir, model, offline, registry_name).sync(frozen=frozen)
    _report(outcome, as_json, "Synced")


@click.command("list")
@model_option
@project_option
@json_option
def list_cmd(model, project_dir, as_json):
    """Installed patches, in composition order."""
    from ._lockfile import Lock
    from ._project import open_project

    project = open_project(project_dir, model)
    lock = Lock.load(project.lock_path)
    patches = lock.patches if lock else []
    if as_json:
        emit_json({"model": project.model, "project": str(project.root), "patches": [vars(p) for p in patches]})
        return
    for p in patches:
        flag = "  (yanked)" if p.yanked else ""
        click.echo(f"{p.name:24} {p.version:12} {p.n_virtual_tokens:5} tokens  {p.source}  key {p.key_id[:16]}{flag}")
    note(f"{len(patches)} patch(es) for `{project.model}` in `{project.root}`")


@click.command("verify")
@model_option
@project_option
@offline_option
@json_option
def verify(model, project_dir, offline, as_json):
    """Re-check every installed patch: cached bytes, signature, key revocation, fingerprint."""
    results = _installer(project_dir, model, offline).verify_installed()
    if as_json:
        emit_json({"results": results, "ok": all(r["ok"] for r in results)})
    else:
        for r in results:
            click.echo(f"{'ok    ' if r['ok'] else 'FAILED'} {r['name']} {r['version']}" + (f": {r['error']}" if r["error"] else ""))
    if not all(r["ok"] for r in results):
        from ..errors import VerificationError

        bad = [f"`{r['name']}@{r['version']}`" for r in results if not r["ok"]]
        raise VerificationError(f"{len(bad)} installed patch(es) failed verification: {', '.join(bad)}",
                                hint="run `patch sync` to fetch verified copies, or remove them")


@click.command("why")
@click.argument("name")
@model_option
@project_option
@json_option
def why(name, model, project_dir, as_json):
    """Why a patch is installed: the chain of requirements that pulled it in."""
    from ._lockfile import Lock
    from ._project import ProjectError, open_project

    project = open_project(project_dir, model)
    lock = Lock.load(project.lock_path)
    entry = lock.find(name) if lock else None
    if entry is None:
        raise ProjectError(f"`{name}` is not installed", hint="see what is with `patch list`")
    chains = []

    def walk(e, trail):
        for who in e.required_by or ["you"]:
            if who == "you":
                chains.append(trail + ["you"])
                continue
            parent_name = who.rsplit(" ", 1)[0]
            parent = lock.find(parent_name)
            if parent is None or parent_name in [t.rsplit(" ", 1)[0] for t in trail]:
                chains.append(trail + [who])
            else:
                walk(parent, trail + [who])

    walk(entry, [f"{entry.name} {entry.version}"])
    if as_json:
        emit_json({"name": entry.name, "version": entry.version, "chains": chains})
        return
    for chain in chains:
        click.echo(" <- ".join(chain[:-1]) + (" <- you asked for it" if chain[-1] == "you" else f" <- {chain[-1]}"))


# --------------------------------------------------------------------- registry commands

def _client(registry_name):
    from ._registry import RegistryClient, get_registry

    return RegistryClient(get_registry(registry_name))


@click.command("search")
@click.argument("query", default="")
@registry_option
@click.option("--base-model", help="Only patches for this fingerprint (`sha256:…`).")
@json_option
def search(query, registry_name, base_model, as_json):
    """Search a registry's patches by name."""
    results = _client(registry_name).search(query, base_model)
    if as_json:
        emit_json({"results": results})
        return
    for r in results:
        click.echo(f"{r['name']:24} {r.get('latest_version') or '-':12} {(r.get('description') or '')[:60]}")
    note(f"{len(results)} result(s)")


@click.command("info")
@click.argument("spec")
@registry_option
@model_option
@json_option
def info(spec, registry_name, model, as_json):
    """A patch's versions (or one: `NAME@VER`) with base model, size, signer and yank status."""
    from ._specs import PatchRequest
    from ._registry import RegistryNotFound

    request = PatchRequest.parse(spec)
    client = _client(registry_name)
    doc = client.index(request.name)
    if not doc:
        raise RegistryNotFound(f"no patch named `{request.name}` in registry `{client.name}`", hint="try `patch search`")
    versions = [v for v in doc["versions"] if request.range.contains(v["version"], include_prerelease=True)]
    fingerprint = None
    if model:
        from ._install import inspect_model

        fingerprint = inspect_model(model).fingerprint
    for v in versions:
        base = v.get("base_model") or {}
        v["compatible"] = None if fingerprint is None else (
            base.get("architecture") == fingerprint.architecture and base.get("weights") == fingerprint.weights)
    if as_json:
        emit_json({**doc, "versions": versions})
        return
    click.echo(f"{doc['name']}  (owner {doc.get('owner')})" + (f"  deprecated: {doc['deprecated']}" if doc.get("deprecated") else ""))
    for v in versions:
        base = v.get("base_model") or {}
        marks = []
        if v.get("yanked"):
            marks.append(f"yanked: {v.get('yank_reason')}")
        if v["compatible"] is not None:
            marks.append("fits your model" if v["compatible"] else "other model")
        click.echo(f"  {v['version']:12} {v['n_virtual_tokens']:5} tokens  base {base.get('name') or '?'} "
                   f"({base.get('architecture', '')[7:19]}/{base.get('weights', '')[7:19]})  "
                   f"key {str(v.get('key_id'))[:16]}" + (f"  ({'; '.join(marks)})" if marks else ""))


@click.command("publish")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--signature", "signature_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Detached signature (default: FILE.sig).")
@click.option("--public-key", "public_key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Publisher key PEM to register when this claims a new name.")
@registry_option
@click.option("--token", envvar="LLMPATCH_TOKEN", help="Registry token (or `LLMPATCH_TOKEN`).")
@json_option
def publish(file, signature_path, public_key, registry_name, token, as_json):
    """Upload a signed patch file to a registry."""
    from ..patchfile import read_patch_bytes

    data = file.read_bytes()
    patch = read_patch_bytes(data)  # refuse locally what the registry would refuse
    sig_path = signature_path or file.with_name(file.name + ".sig")
    if not sig_path.exists():
        raise LLMPatchError(f"no signature at `{sig_path}`", hint=f"sign it first: `patch sign {file}`")
    client = _client(registry_name)
    client.token = token or client.token
    result = client.publish(data, sig_path.read_bytes(), public_key.read_bytes() if public_key else None)
    if as_json:
        emit_json(result)
    else:
        click.echo(f"{result['name']} {result['version']} sha256:{result['sha256']}")
        note(f"{'Published' if result.get('created') else 'Already published'} `{patch.manifest.name}@{patch.manifest.version}` to `{client.name}`")


@click.command("yank")
@click.argument("spec")
@click.option("--reason", required=True, help="Why: shown to everyone who has it locked.")
@registry_option
@click.option("--token", envvar="LLMPATCH_TOKEN", help="Registry token (or `LLMPATCH_TOKEN`).")
@json_option
def yank(spec, reason, registry_name, token, as_json):
    """Yank `NAME@VERSION`: new installs skip it, existing locks keep it with a warning."""
    name, _, version = spec.partition("@")
    if not version:
        raise click.UsageError("give the exact version to yank: `NAME@X.Y.Z`")
    client = _client(registry_name)
    client.token = token or client.token
    result = client.yank(name, version.lstrip("="), reason)
    if as_json:
        emit_json(result)
    else:
        note(f"Yanked `{name}@{version}`: {reason}")


@click.command("run")
@click.argument("prompt")
@model_option
@project_option
@click.option("--max-new-tokens", default=64, show_default=True)
@click.option("--compare", is_flag=True, help="Also print the unpatched model's answer.")
@click.option("--no-chat", is_flag=True, help="Do not wrap the prompt in the chat template.")
@json_option
def run(prompt, model, project_dir, max_new_tokens, compare, no_chat, as_json):
    """Run the model with its installed patch set (offline; re-verifies from the cache)."""
    installer = _installer(project_dir, model, offline=True)
    patch_set = installer.patch_set()
    from ..model.generation import SamplingConfig, encode_prompt, generate
    from ..model.loading import load_model
    from ..model.runtime import PatchedModel

    loaded = load_model(installer.project.model)
    patched = PatchedModel(loaded.model, loaded.tokenizer, loaded.fingerprint)
    patched.check(patch_set)
    ids = encode_prompt(loaded.tokenizer, prompt, chat=not no_chat)
    sets = [patch_set, []] if compare else [patch_set]
    out = generate(patched, [ids] * len(sets), sets, SamplingConfig(max_new_tokens=max_new_tokens))
    names = [f"{p.manifest.name}@{p.manifest.version}" for p in patch_set]
    if as_json:
        emit_json({"patches": names, "patched": out[0].text, "unpatched": out[1].text if compare else None})
        return
    if compare:
        click.echo("--- without patches")
        click.echo(out[1].text)
        click.echo(f"--- with {', '.join(names) or 'no patches'}")
    click.echo(out[0].text)


# --------------------------------------------------------------------- `patch registry add/list/remove`

@click.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--root", "root_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The registry's initial TUF root metadata (`1.root.json`), obtained out of band.")
@click.option("--root-sha256", help="Fetch `1.root.json` from URL and accept it only with this sha256.")
@json_option
def registry_add(name, url, root_file, root_sha256, as_json):
    """Add a registry and pin its root of trust (TUF root metadata)."""
    from ._registry import add_registry

    if root_file is None and root_sha256 is None:
        raise click.UsageError("pin the root of trust: `--root FILE` or `--root-sha256 HEX`")
    if root_file is not None:
        root = root_file.read_bytes()
    else:
        from ._http import import_httpx, new_client

        httpx = import_httpx()
        try:
            with new_client(timeout=30) as http:
                response = http.get(url.rstrip("/") + "/tuf/metadata/1.root.json")
                response.raise_for_status()
        except httpx.HTTPError as exc:
            from ._registry import RegistryUnavailable

            raise RegistryUnavailable(f"could not fetch the root metadata from `{url}`: {exc}") from None
        root = response.content
    config = add_registry(name, url, root, root_sha256)
    if as_json:
        emit_json({"name": config.name, "url": config.url, "root_sha256": config.root_sha256})
    else:
        note(f"Added registry `{name}` at `{config.url}` (root sha256 {config.root_sha256[:16]}…)")


@click.command("list")
@json_option
def registry_list(as_json):
    """Configured registries."""
    from ._registry import load_registries

    registries = load_registries()
    if as_json:
        emit_json({"registries": [{"name": r.name, "url": r.url, "root_sha256": r.root_sha256} for r in registries.values()]})
        return
    for r in registries.values():
        click.echo(f"{r.name:16} {r.url}  root sha256:{r.root_sha256[:16]}…")


@click.command("remove")
@click.argument("name")
def registry_remove(name):
    """Forget a registry and its cached metadata."""
    from ._registry import remove_registry

    remove_registry(name)
    note(f"Removed registry `{name}`")


CLIENT_REGISTRY_COMMANDS = (registry_add, registry_list, registry_remove)


def add_registry_commands(group: click.Group) -> None:
    """Attach `add`, `list`, `remove` to the `patch registry` group (owned by the registry)."""
    for command in CLIENT_REGISTRY_COMMANDS:
        if command.name not in group.commands:
            group.add_command(command)


@click.command("push")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--hub", "repo_id", required=True, help="Hugging Face repo `ORG/NAME` to upload to.")
@click.option("--revision", default=None, help="Branch to commit to (default: the repo's main branch).")
@click.option("--private", is_flag=True, help="Create the repo as private if it does not exist.")
@json_option
def push(file, repo_id, revision, private, as_json):
    """Upload a signed patch to the Hugging Face Hub as a PEFT prompt-tuning adapter, with the
    patch file and its signature next to it, so `patch install hf://ORG/NAME@REV` can verify it."""
    from ._hub import push_to_hub

    result = push_to_hub(file, repo_id, revision=revision, private=private)
    if as_json:
        emit_json(result)
    else:
        click.echo(f"hf://{repo_id}@{result['commit']}")
        note(f"Pushed `{result['name']}@{result['version']}` to `{repo_id}`")
