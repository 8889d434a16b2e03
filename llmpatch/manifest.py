"""The manifest: what a patch is, for which base model, made how. Stored as canonical JSON
in the safetensors header's `__metadata__`, so the file stays one self-describing blob.

Every check here raises `InvalidManifest` naming the field and the rule it broke.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import semver

from .errors import InvalidManifest

FORMAT_NAME = "llm-patch"
# Format 1: a prefix on the input embeddings. Format 2 adds `placement: "kv"`, a prefix of keys
# and values at every attention layer; only such patches are written as 2, so releases that
# read only format 1 refuse them with "upgrade llm-patch" instead of misreading them.
FORMAT_VERSION = 1
KV_FORMAT_VERSION = 2
SUPPORTED_FORMAT_VERSIONS = (FORMAT_VERSION, KV_FORMAT_VERSION)
PLACEMENTS = ("input", "kv")

NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}\Z")
FINGERPRINT_PATTERN = re.compile(r"sha256:[0-9a-f]{64}\Z")
DTYPES = ("F32", "F16", "BF16")

# Caps on free-form parts, so a header cannot smuggle megabytes of text.
MAX_DESCRIPTION_CHARS = 4096
MAX_LICENSE_CHARS = 256
MAX_FREEFORM_JSON_BYTES = 64 * 1024  # provenance, evaluation
MAX_RELATIONS = 64  # dependencies, conflicts, domains
MAX_VIRTUAL_TOKENS = 4096
MAX_HIDDEN_SIZE = 65536
MAX_PREFIX_WIDTH = 1 << 22  # floats per virtual token (a kv prefix: layers x 2 x kv heads x head dim)


def check_name(name: Any, what: str = "name") -> str:
    """Patch names: ASCII, 1-64 chars of letters, digits, `-` and `_`, starting with a letter."""
    if not isinstance(name, str):
        raise InvalidManifest(f"{what} must be a string, got {type(name).__name__}")
    if not NAME_PATTERN.match(name):
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise InvalidManifest(
            f"{what} `{shown}` is not a valid patch name",
            hint="a name has 1-64 ASCII letters, digits, `-` or `_`, and starts with a letter",
        )
    return name


def canonical_name(name: str) -> str:
    """Names compare case-insensitively and with `-` and `_` equal (as PyPI does), so
    `Toxicity`, `toxicity` and `TOXICITY` cannot be three different patches."""
    return check_name(name).lower().replace("_", "-")


def check_version(version: Any, what: str = "version") -> semver.Version:
    """Strict semver 2.0: `1.2.3`, `1.2.3-rc.1`, `1.2.3+build`; not `1.2` or `v1.2.3`."""
    if not isinstance(version, str):
        raise InvalidManifest(f"{what} must be a string, got {type(version).__name__}")
    try:
        return semver.Version.parse(version)
    except ValueError:
        raise InvalidManifest(
            f"{what} `{version[:80]}` is not a semantic version",
            hint="use MAJOR.MINOR.PATCH, e.g. `1.2.0` or `1.3.0-rc.1`",
        ) from None


def check_fingerprint(value: Any, what: str) -> str:
    if not isinstance(value, str) or not FINGERPRINT_PATTERN.match(value):
        raise InvalidManifest(f"{what} must look like `sha256:<64 hex digits>`, got `{str(value)[:80]}`")
    return value


@dataclass(frozen=True)
class BaseModelRef:
    """Which base model a patch was trained on (see `llmpatch.fingerprint`)."""

    architecture: str  # fingerprint of config, tensor layout and tokenizer vocabulary
    weights: str  # fingerprint of the weight values
    name: str = ""  # a human hint such as `HuggingFaceTB/SmolLM2-135M-Instruct`; never trusted


@dataclass(frozen=True)
class Relation:
    """A dependency or conflict on another patch: a name and a version range (client grammar)."""

    name: str
    spec: str = "*"


@dataclass(frozen=True)
class KVLayout:
    """Where a `kv` prefix goes: at each of `layers` attention layers, keys and values of
    `kv_heads` x `head_dim`. A virtual token is stored as layers x (keys, values) x heads x dim,
    the layout of PEFT's prefix tuning."""

    layers: int
    kv_heads: int
    head_dim: int

    @property
    def width(self) -> int:
        return self.layers * 2 * self.kv_heads * self.head_dim

    def __str__(self) -> str:
        return f"{self.layers} layers x {self.kv_heads} KV heads x {self.head_dim}"


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    base_model: BaseModelRef
    n_virtual_tokens: int
    hidden_size: int
    dtype: str = "F32"
    domains: tuple[str, ...] = ()
    dependencies: tuple[Relation, ...] = ()
    conflicts: tuple[Relation, ...] = ()
    provenance: dict = field(default_factory=dict)  # config digest, reference model, method
    evaluation: dict = field(default_factory=dict)  # summary figures from `patch eval`
    license: str = ""
    description: str = ""
    placement: str = "input"  # "input": on the input embeddings; "kv": keys and values per layer
    kv_layout: KVLayout | None = None  # for placement "kv"
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.placement == "kv" and self.format_version == FORMAT_VERSION:
            object.__setattr__(self, "format_version", KV_FORMAT_VERSION)
        validate_manifest_dict(self.to_dict())

    @property
    def prefix_width(self) -> int:
        """Floats per virtual token in the patch's tensor."""
        return self.kv_layout.width if self.placement == "kv" and self.kv_layout else self.hidden_size

    @property
    def canonical_name(self) -> str:
        return canonical_name(self.name)

    @property
    def semver(self) -> semver.Version:
        return semver.Version.parse(self.version)

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("domains", "dependencies", "conflicts"):
            data[key] = list(data[key])
        if self.placement == "input":  # format 1 as it always was, byte for byte
            del data["placement"], data["kv_layout"]
        return data

    def to_json(self) -> str:
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> "Manifest":
        validate_manifest_dict(data)
        return cls(
            name=data["name"],
            version=data["version"],
            base_model=BaseModelRef(**data["base_model"]),
            n_virtual_tokens=data["n_virtual_tokens"],
            hidden_size=data["hidden_size"],
            dtype=data.get("dtype", "F32"),
            domains=tuple(data.get("domains", ())),
            dependencies=tuple(Relation(**r) for r in data.get("dependencies", ())),
            conflicts=tuple(Relation(**r) for r in data.get("conflicts", ())),
            provenance=dict(data.get("provenance", {})),
            evaluation=dict(data.get("evaluation", {})),
            license=data.get("license", ""),
            description=data.get("description", ""),
            placement=data.get("placement", "input"),
            kv_layout=KVLayout(**data["kv_layout"]) if data.get("kv_layout") else None,
            format_version=data.get("format_version", FORMAT_VERSION),
        )

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        return cls.from_dict(strict_json_loads(text, "manifest"))


def canonical_json(data: Any) -> str:
    """Sorted keys, no insignificant white space: the same data always gives the same bytes."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def strict_json_loads(text: str | bytes, what: str) -> Any:
    """JSON that refuses duplicate keys and NaN/Infinity, which parsers disagree on."""

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            dupes = sorted({k for k in keys if keys.count(k) > 1})
            raise InvalidManifest(f"{what} has duplicate keys: {', '.join(dupes)}")
        return dict(pairs)

    def no_constants(name):
        raise InvalidManifest(f"{what} contains `{name}`, which is not valid JSON")

    try:
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidManifest(f"{what} is not valid JSON: {exc}") from None


_FIELDS = {
    "name", "version", "base_model", "n_virtual_tokens", "hidden_size", "dtype", "domains",
    "dependencies", "conflicts", "provenance", "evaluation", "license", "description",
    "format_version", "placement", "kv_layout",
}
_REQUIRED = ("name", "version", "base_model", "n_virtual_tokens", "hidden_size")


def _check_int(data: dict, key: str, low: int, high: int) -> None:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidManifest(f"manifest field `{key}` must be an integer from {low} to {high}, got {value!r}")


def _check_str(data: dict, key: str, cap: int) -> None:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise InvalidManifest(f"manifest field `{key}` must be a string")
    if len(value) > cap:
        raise InvalidManifest(f"manifest field `{key}` has {len(value)} characters; the limit is {cap}")


def _check_relations(data: dict, key: str) -> None:
    relations = data.get(key, [])
    if not isinstance(relations, (list, tuple)) or len(relations) > MAX_RELATIONS:
        raise InvalidManifest(f"manifest field `{key}` must be a list of at most {MAX_RELATIONS} entries")
    for entry in relations:
        if not isinstance(entry, dict) or set(entry) - {"name", "spec"} or "name" not in entry:
            raise InvalidManifest(f"each entry of `{key}` must be an object with `name` and optional `spec`")
        check_name(entry["name"], f"`{key}` entry name")
        spec = entry.get("spec", "*")
        if not isinstance(spec, str) or not 1 <= len(spec) <= 128 or not spec.isascii():
            raise InvalidManifest(f"`{key}` entry `{entry['name']}` has an invalid version spec {spec!r}")


def _check_freeform(data: dict, key: str) -> None:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise InvalidManifest(f"manifest field `{key}` must be an object")
    try:
        size = len(canonical_json(value))
    except ValueError:
        raise InvalidManifest(f"manifest field `{key}` contains NaN or Infinity") from None
    if size > MAX_FREEFORM_JSON_BYTES:
        raise InvalidManifest(f"manifest field `{key}` is {size} bytes; the limit is {MAX_FREEFORM_JSON_BYTES}")


def _check_placement(data: dict) -> None:
    """Format 1 is an input prefix and names no placement; format 2 is a kv prefix with its layout."""
    placement = data.get("placement", "input")
    if placement not in PLACEMENTS:
        raise InvalidManifest(f"manifest placement {placement!r} is not one of {', '.join(PLACEMENTS)}")
    kv = placement == "kv"
    if data.get("format_version", FORMAT_VERSION) != (KV_FORMAT_VERSION if kv else FORMAT_VERSION):
        raise InvalidManifest(
            f"a placement {placement!r} patch has format_version {KV_FORMAT_VERSION if kv else FORMAT_VERSION},"
            f" not {data.get('format_version', FORMAT_VERSION)!r}"
        )
    layout = data.get("kv_layout")
    if not kv:
        if layout is not None:
            raise InvalidManifest("manifest field `kv_layout` belongs to placement `kv` patches only")
        return
    if not isinstance(layout, dict) or set(layout) != {"layers", "kv_heads", "head_dim"}:
        raise InvalidManifest("a placement `kv` patch needs `kv_layout`: an object with `layers`, `kv_heads`, `head_dim`")
    for key in ("layers", "kv_heads", "head_dim"):
        _check_int(layout, key, 1, MAX_HIDDEN_SIZE)
    width = KVLayout(**layout).width
    if width > MAX_PREFIX_WIDTH:
        raise InvalidManifest(f"`kv_layout` makes {width} floats per virtual token; the limit is {MAX_PREFIX_WIDTH}")


def validate_manifest_dict(data: Any) -> None:
    """The strict validator shared by the trainer, the registry and the client."""
    if not isinstance(data, dict):
        raise InvalidManifest("manifest must be a JSON object")
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise InvalidManifest(f"manifest has unknown fields: {', '.join(unknown)}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise InvalidManifest(f"manifest is missing required fields: {', '.join(missing)}")
    if data.get("format_version", FORMAT_VERSION) not in SUPPORTED_FORMAT_VERSIONS:
        raise InvalidManifest(
            f"manifest format_version {data.get('format_version')!r} is not supported"
            f" (this llm-patch reads {', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))})",
            hint="upgrade llm-patch",
        )
    _check_placement(data)
    check_name(data["name"])
    check_version(data["version"])
    base = data["base_model"]
    if not isinstance(base, dict) or set(base) - {"architecture", "weights", "name"}:
        raise InvalidManifest("manifest field `base_model` must be an object with `architecture`, `weights`, `name`")
    check_fingerprint(base.get("architecture"), "base_model.architecture")
    check_fingerprint(base.get("weights"), "base_model.weights")
    if not isinstance(base.get("name", ""), str) or len(base.get("name", "")) > 256:
        raise InvalidManifest("base_model.name must be a string of at most 256 characters")
    _check_int(data, "n_virtual_tokens", 1, MAX_VIRTUAL_TOKENS)
    _check_int(data, "hidden_size", 1, MAX_HIDDEN_SIZE)
    if data.get("dtype", "F32") not in DTYPES:
        raise InvalidManifest(f"manifest dtype {data.get('dtype')!r} is not one of {', '.join(DTYPES)}")
    domains = data.get("domains", [])
    if not isinstance(domains, (list, tuple)) or len(domains) > MAX_RELATIONS:
        raise InvalidManifest(f"manifest field `domains` must be a list of at most {MAX_RELATIONS} names")
    for domain in domains:
        check_name(domain, "domain")
    _check_relations(data, "dependencies")
    _check_relations(data, "conflicts")
    _check_freeform(data, "provenance")
    _check_freeform(data, "evaluation")
    _check_str(data, "license", MAX_LICENSE_CHARS)
    _check_str(data, "description", MAX_DESCRIPTION_CHARS)
