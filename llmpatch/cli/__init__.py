"""The `patch` / `llm-patch` command line.

`patch` shares its name with GNU patch. When its first argument is not one of our
subcommands (`patch -p1 < fix.diff`), `patch_entry` hands the whole call to the system's
patch unchanged, so installing llm-patch never breaks a build. `llm-patch` is always ours.

Subcommands load lazily, so `patch --help`, key and file commands never import torch.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import click

from .. import __version__
from ..errors import LLMPatchError

# name -> "module:attribute"; the single list of what `patch` owns.
COMMANDS = {
    "new": "llmpatch.cli.model_cmds:new",
    "inspect": "llmpatch.cli.file_cmds:inspect_cmd",
    "sign": "llmpatch.cli.file_cmds:sign",
    "verify-file": "llmpatch.cli.file_cmds:verify_file",
    "keys": "llmpatch.cli.keys_cmds:keys",
    "fingerprint": "llmpatch.cli.model_cmds:fingerprint",
    "generate": "llmpatch.cli.model_cmds:generate_cmd",
    "export-peft": "llmpatch.cli.model_cmds:export_peft",
    "import-peft": "llmpatch.cli.model_cmds:import_peft",
    "registry": "llmpatch.registry.cli:registry",
    "train": "llmpatch.trainer.cli:train_cmd",
    # the client (issue #5)
    "install": "llmpatch.client.cli:install",
    "remove": "llmpatch.client.cli:remove",
    "upgrade": "llmpatch.client.cli:upgrade",
    "lock": "llmpatch.client.cli:lock",
    "sync": "llmpatch.client.cli:sync",
    "list": "llmpatch.client.cli:list_cmd",
    "verify": "llmpatch.client.cli:verify",
    "why": "llmpatch.client.cli:why",
    "search": "llmpatch.client.cli:search",
    "info": "llmpatch.client.cli:info",
    "publish": "llmpatch.client.cli:publish",
    "yank": "llmpatch.client.cli:yank",
    "run": "llmpatch.client.cli:run",
    "push": "llmpatch.client.cli:push",
    # evaluation (issue #3)
    "eval": "llmpatch.trainer.eval_cli:eval_cmd",
}

EPILOG = """\b
Exit codes: 0 success; 1 error; 2 usage error; 3 invalid patch file;
4 verification failed (signature, digest, key or base-model fingerprint);
5 no set of patch versions satisfies the request.

\b
As `patch`, any first argument that is not a subcommand above goes to GNU
patch unchanged (`patch -p1 < fix.diff`); `llm-patch` is the unambiguous name.
"""


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attribute = target.split(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="llm-patch")
def cli():
    """llm-patch: apt for LLM safety patches.

    A patch is a small learned soft prefix that steers a frozen model toward safer
    behaviour. Make one from a safety instruction, sign it, check which model it
    belongs to, and run a model with one or several patches:

    \b
      patch new --model smollm2 --text "Refuse harmful requests." -n 50 \\
                --name refusal --version 0.1.0 -o refusal.safetensors
      patch inspect refusal.safetensors
      patch generate --model smollm2 --patch refusal.safetensors "How do I pick a lock?"
    """


def run(args: list[str], prog_name: str) -> int:
    try:
        cli.main(args=args, prog_name=prog_name, standalone_mode=False)
    except LLMPatchError as exc:
        click.echo(f"error: {exc}", err=True)
        if exc.hint:
            click.echo(f"\nhint: {exc.hint}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return 0


def _lean_process() -> None:
    """This process is the command, nothing else: the client may skip imports it never uses."""
    from ..client._http import lean_process

    lean_process()


def main() -> None:
    """`llm-patch`: always ours."""
    _lean_process()
    sys.exit(run(sys.argv[1:], "llm-patch"))


# Where GNU patch lives when PATH finds only us (e.g. our venv's bin first, nothing else).
FALLBACK_GNU_PATCHES = ("/usr/bin/patch", "/bin/patch", "/usr/local/bin/gpatch", "/opt/homebrew/bin/gpatch")


def _is_ours(path: Path) -> bool:
    """Our own console script (pip writes a small Python file importing llmpatch.cli)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return head.startswith(b"#!") and b"llmpatch.cli" in head


def find_gnu_patch() -> str | None:
    override = os.environ.get("LLMPATCH_GNU_PATCH")
    if override:
        return override
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = Path(folder or ".") / "patch"
        if candidate.is_file() and os.access(candidate, os.X_OK) and not _is_ours(candidate):
            return str(candidate)
    for candidate in FALLBACK_GNU_PATCHES:
        if os.access(candidate, os.X_OK) and not _is_ours(Path(candidate)):
            return candidate
    return None


def routes_to_gnu(args: list[str], stdin_is_tty: bool) -> bool:
    """Which calls of `patch` belong to GNU patch."""
    if not args:
        return not stdin_is_tty  # `patch < fix.diff`; a bare `patch` at a terminal gets our help
    first = args[0]
    return first not in COMMANDS and first not in ("-h", "--help")


def patch_entry() -> None:
    """`patch`: ours for our subcommands, GNU patch for everything else."""
    args = sys.argv[1:]
    if routes_to_gnu(args, sys.stdin.isatty()):
        gnu = find_gnu_patch()
        if gnu is None:
            click.echo("error: GNU patch is not installed, and `" + " ".join(["patch", *args])[:80] + "` is not an llm-patch command", err=True)
            click.echo("\nhint: install GNU patch (`apt-get install patch`), or run `llm-patch --help`", err=True)
            sys.exit(127)
        os.execv(gnu, [gnu, *args])  # same arguments, same stdin: GNU patch never knows we were here
    _lean_process()
    sys.exit(run(args, "patch"))
