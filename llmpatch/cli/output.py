"""How commands report: data on stdout (`--json` for scripts), messages on stderr.
Messages follow uv's style: backticks around names and paths, no trailing period."""

from __future__ import annotations

import json
import sys

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print a JSON document on stdout instead of text.")


def emit_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def note(message: str) -> None:
    """A progress or status line for people: stderr, so stdout stays data."""
    click.echo(message, err=True)


def progress(iterable=None, *, total=None, desc: str = "", unit: str = "it"):
    """A tqdm bar on stderr, hidden when stderr is not a terminal unless forced."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, leave=False)
