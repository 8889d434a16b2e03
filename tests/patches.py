"""Building patch files in tests without a model."""

from __future__ import annotations

import numpy as np

from llmpatch.manifest import BaseModelRef, Manifest
from llmpatch.patchfile import PatchFile, encode_patch, read_patch_bytes

FAKE_FP = "sha256:" + "ab" * 32


def make_manifest(name="toxicity", version="1.0.0", n=4, hidden=8, base=None, **extra) -> Manifest:
    base = base or BaseModelRef(FAKE_FP, FAKE_FP, "tiny")
    return Manifest(name=name, version=version, base_model=base, n_virtual_tokens=n, hidden_size=hidden, **extra)


def make_patch(name="toxicity", version="1.0.0", n=4, hidden=8, seed=0, base=None, **extra) -> PatchFile:
    prefix = np.random.default_rng(seed).standard_normal((n, hidden)).astype(np.float32)
    return read_patch_bytes(encode_patch(make_manifest(name, version, n, hidden, base, **extra), prefix))


def make_patch_bytes(name="toxicity", version="1.0.0", n=4, hidden=8, seed=0, base=None, **extra) -> bytes:
    prefix = np.random.default_rng(seed).standard_normal((n, hidden)).astype(np.float32)
    return encode_patch(make_manifest(name, version, n, hidden, base, **extra), prefix)
