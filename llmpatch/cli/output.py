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


class NoProgress:
    """What a hidden tqdm bar does (nothing), without importing tqdm (~0.1 s): iterates
    `iterable` unchanged, and takes `update`/`set_postfix`/`close` and `with` as a bar does."""

    def __init__(self, iterable=None):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def update(self, n=1):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass


def progress(iterable=None, *, total=None, desc: str = "", unit: str = "it"):
    """A tqdm bar on stderr, hidden when stderr is not a terminal."""
    stream = sys.stderr
    if hasattr(stream, "isatty") and not stream.isatty():  # tqdm's own test for disable=None
        return NoProgress(iterable)
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=stream, disable=None, leave=False)
