"""The llm-patch client: resolve, verify, lock and install patches from registries (issue #5).

`patch install toxicity@1.2 --model smollm2` goes: project files → resolver over a release
source → TUF-verified download into the content-addressed cache → signature, digest and
fingerprint checks → lockfile written last. The modules are private; this is the surface.
"""

from ._resolver import Resolution, ResolutionImpossible, Target, resolve
from ._sources import ChainSource, MemorySource, Release, ReleaseSource, release_from_dict
from ._specs import InvalidSpec, PatchRequest, VersionRange

__all__ = [
    "ChainSource",
    "InvalidSpec",
    "MemorySource",
    "PatchRequest",
    "Release",
    "ReleaseSource",
    "Resolution",
    "ResolutionImpossible",
    "Target",
    "VersionRange",
    "release_from_dict",
    "resolve",
]
