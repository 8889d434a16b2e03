"""`patches.toml`: which model, which patches (with ranges), and the limits, for one project.

    [project]
    model = "smollm2"          # a folder, a .gguf file, a Hub id or a bundled alias
    token_budget = 200         # optional: most virtual tokens the installed set may use
    registry = "default"       # optional: which configured registry to install from

    [patches]                  # order = composition order of the prefixes
    toxicity = "1.2"
    harmfulness = "^1"
    local-fix = { hf = "org/local-fix", revision = "main" }

Without a `patches.toml` in the working folder or above it, commands use a per-model state
folder under the user data directory, so `patch install X --model M` works anywhere.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths
from ..errors import LLMPatchError
from ..manifest import canonical_name
from ._specs import PatchRequest, VersionRange

PROJECT_FILE = "patches.toml"
LOCK_FILE = "patches.lock"


class ProjectError(LLMPatchError):
    """`patches.toml` is missing, unreadable, or disagrees with the command line."""


def _dump_toml(data: dict) -> bytes:
    try:
        import tomli_w
    except ImportError:
        raise ProjectError("writing `patches.toml` needs `tomli-w`", hint="pip install 'llm-patch[client]'") from None
    return tomli_w.dumps(data).encode()


@dataclass
class Project:
    root: Path  # the folder holding patches.toml and patches.lock
    model: str
    patches: dict[str, str | dict] = field(default_factory=dict)  # name -> range, or {hf, revision}
    token_budget: int | None = None
    registry: str | None = None
    per_model: bool = False  # True: the state folder under the data dir, not a user project

    @property
    def path(self) -> Path:
        return self.root / PROJECT_FILE

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_FILE

    def requests(self) -> list[PatchRequest]:
        return [
            PatchRequest(name, VersionRange.parse(spec)) for name, spec in self.patches.items() if isinstance(spec, str)
        ]

    def hub_refs(self) -> dict[str, dict]:
        return {name: spec for name, spec in self.patches.items() if isinstance(spec, dict)}

    def find(self, name: str) -> str | None:
        key = canonical_name(name)
        return next((n for n in self.patches if canonical_name(n) == key), None)

    def set(self, name: str, spec: str | dict) -> None:
        existing = self.find(name)
        if existing is not None and existing != name:
            del self.patches[existing]
        self.patches[existing or name] = spec

    def remove(self, name: str) -> str:
        existing = self.find(name)
        if existing is None:
            raise ProjectError(f"`{name}` is not in `{self.path}`", hint="see what is installed with `patch list`")
        del self.patches[existing]
        return existing

    def to_toml(self) -> bytes:
        project = {"model": self.model}
        if self.token_budget is not None:
            project["token_budget"] = self.token_budget
        if self.registry:
            project["registry"] = self.registry
        return _dump_toml({"project": project, "patches": dict(self.patches)})

    def save(self) -> None:
        paths.atomic_write_bytes(self.path, self.to_toml())

    @classmethod
    def load(cls, root: Path, *, per_model: bool = False) -> "Project":
        path = Path(root) / PROJECT_FILE
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ProjectError(f"no `{PROJECT_FILE}` in `{root}`") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ProjectError(f"`{path}` is not valid TOML: {exc}") from None
        project = data.get("project", {})
        model = project.get("model")
        if not isinstance(model, str) or not model:
            raise ProjectError(f"`{path}` has no `model` under `[project]`", hint='add `model = "smollm2"` (or a model folder)')
        budget = project.get("token_budget")
        if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 1):
            raise ProjectError(f"`token_budget` in `{path}` must be a positive integer, got {budget!r}")
        patches = data.get("patches", {})
        if not isinstance(patches, dict):
            raise ProjectError(f"`[patches]` in `{path}` must be a table of name = \"range\"")
        for name, spec in patches.items():
            if isinstance(spec, dict):
                if not isinstance(spec.get("hf"), str):
                    raise ProjectError(f"patch `{name}` in `{path}` is a table without `hf = \"ORG/NAME\"`")
            elif not isinstance(spec, str):
                raise ProjectError(f"patch `{name}` in `{path}` must have a version range string, got {spec!r}")
            else:
                PatchRequest.parse(f"{name}@{spec}" if spec else name)  # refuse bad ranges early
        return cls(Path(root), model, dict(patches), budget, project.get("registry"), per_model)


def find_project_root(start: Path | None = None) -> Path | None:
    """The nearest folder at or above `start` holding a `patches.toml`."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    return None


def model_state_root(model: str) -> Path:
    """The per-model state folder used outside projects: one per model as typed, made absolute."""
    spec = model
    candidate = Path(model).expanduser()
    if candidate.exists():
        spec = str(candidate.resolve())
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(spec).name or spec)[:40]
    digest = hashlib.sha256(spec.encode()).hexdigest()[:12]
    return paths.data_dir() / "models" / f"{slug}-{digest}"


def open_project(project_dir: Path | None, model: str | None, *, create: bool = False) -> Project:
    """The project a command acts on: `--project DIR`, else the nearest `patches.toml`, else the
    per-model state for `--model`. `create` makes a new one when none exists yet."""
    root = Path(project_dir) if project_dir else find_project_root()
    per_model = False
    if root is None:
        if not model:
            raise ProjectError(
                f"no `{PROJECT_FILE}` here or above, and no `--model` given",
                hint="pass `--model M` (e.g. `--model smollm2`) or run in a folder with a `patches.toml`",
            )
        root, per_model = model_state_root(model), True
    if (root / PROJECT_FILE).is_file():
        project = Project.load(root, per_model=per_model)
        if model and model != project.model:
            raise ProjectError(
                f"`{project.path}` is for model `{project.model}`, not `{model}`",
                hint="drop `--model`, or change `model` in the project file",
            )
        return project
    if not create:
        raise ProjectError(f"nothing installed yet for `{model or root}`", hint="install a patch with `patch install NAME --model M`")
    if not model:
        raise ProjectError(f"`{root}` has no `{PROJECT_FILE}`; pass `--model` to create one")
    return Project(root, model, per_model=per_model)


@contextmanager
def project_lock(project: Project, on_wait=None):
    """Hold an advisory lock on the project folder for one command, so two `patch install`s
    cannot interleave their read-resolve-write (dpkg's lock, in small). POSIX only."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; writes are still atomic
        yield
        return
    project.root.mkdir(parents=True, exist_ok=True)
    with open(project.root / ".patches.lock.flock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait(f"waiting for another `patch` command working on `{project.root}`")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
