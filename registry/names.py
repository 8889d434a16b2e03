"""Which patch names the registry accepts: the core's strict ASCII rule (so Unicode
confusables such as Cyrillic `а` never get in), minus reserved words, and no two names that
fold to the same confusable skeleton."""

from __future__ import annotations

from llmpatch.errors import InvalidManifest
from llmpatch.manifest import canonical_name

from .errors import bad_request

# Words that are, or could become, URL segments or look official.
RESERVED = frozenset({
    "admin", "administrator", "api", "blobs", "blob", "tuf", "static", "assets", "docs", "openapi",
    "patches", "patch", "search", "login", "logout", "user", "users", "token", "tokens", "keys",
    "health", "metadata", "targets", "root", "snapshot", "timestamp", "registry", "llm-patch",
    "llmpatch", "official", "security", "system", "null", "none", "undefined",
})

# ASCII look-alikes folded together: `refusa1`, `refusaI` and `refusal` share a skeleton.
_FOLD = str.maketrans({"0": "o", "1": "l", "i": "l", "5": "s", "_": "-", "|": "l"})


def skeleton(name: str) -> str:
    folded = canonical_name(name).translate(_FOLD).replace("rn", "m").replace("vv", "w")
    return "-".join(part for part in folded.split("-") if part)  # `a--b` looks like `a-b`


_RESERVED_SKELETONS = frozenset(skeleton(word) for word in RESERVED)


def check_patch_name(name: str) -> str:
    """Return the canonical name, or raise a 400 `invalid_name` / `reserved_name`."""
    try:
        canonical = canonical_name(name)
    except InvalidManifest as exc:
        raise bad_request("invalid_name", str(exc)) from None
    if canonical in RESERVED or skeleton(canonical) in _RESERVED_SKELETONS:
        raise bad_request("reserved_name", f"patch name `{name}` is reserved")
    return canonical
