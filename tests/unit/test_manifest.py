"""Manifest rules: names, versions, fingerprints, sizes; each rejection says what is wrong."""

import pytest

from llmpatch.errors import InvalidManifest
from llmpatch.manifest import BaseModelRef, Manifest, canonical_name, check_name, check_version, strict_json_loads
from patches import FAKE_FP, make_manifest


@pytest.mark.parametrize("name", ["a", "toxicity", "Tox_icity-2", "x" * 64])
def test_valid_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "1abc", "-abc", "_abc", "x" * 65, "../etc", "a/b", "a.b", "a b", "tοxicity", "ﬁx", "a\x00b", "toxicity\n"],
)
def test_invalid_names(name):
    with pytest.raises(InvalidManifest, match="is not a valid patch name"):
        check_name(name)


def test_name_must_be_a_string():
    with pytest.raises(InvalidManifest, match="name must be a string, got int"):
        check_name(5)


def test_names_compare_case_insensitively():
    assert canonical_name("ToXicity") == canonical_name("toxicity") == "toxicity"
    assert canonical_name("safe_chat") == canonical_name("Safe-Chat")


@pytest.mark.parametrize("version", ["1.2.3", "0.0.1", "1.2.3-rc.1", "1.0.0+build.5"])
def test_valid_versions(version):
    assert str(check_version(version)) == version


@pytest.mark.parametrize("version", ["1.2", "v1.2.3", "1", "01.2.3", "1.2.3.4", "latest", ""])
def test_invalid_versions(version):
    with pytest.raises(InvalidManifest, match="is not a semantic version"):
        check_version(version)


def test_round_trip_through_json():
    manifest = make_manifest(domains=("toxicity",), evaluation={"toxicity": 0.1}, license="MIT")
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_rejects_unknown_fields():
    data = make_manifest().to_dict() | {"surprise": 1}
    with pytest.raises(InvalidManifest, match="unknown fields: surprise"):
        Manifest.from_dict(data)


def test_rejects_missing_fields():
    data = make_manifest().to_dict()
    del data["hidden_size"]
    with pytest.raises(InvalidManifest, match="missing required fields: hidden_size"):
        Manifest.from_dict(data)


def test_rejects_bad_fingerprint():
    with pytest.raises(InvalidManifest, match="base_model.weights must look like `sha256:<64 hex digits>`"):
        make_manifest(base=BaseModelRef(FAKE_FP, "md5:abc"))


@pytest.mark.parametrize("field,value", [("n_virtual_tokens", 0), ("n_virtual_tokens", 10**6), ("hidden_size", True), ("hidden_size", 1.5)])
def test_rejects_bad_sizes(field, value):
    data = make_manifest().to_dict() | {field: value}
    with pytest.raises(InvalidManifest, match=f"`{field}` must be an integer"):
        Manifest.from_dict(data)


def test_rejects_unknown_dtype():
    with pytest.raises(InvalidManifest, match="dtype 'F64' is not one of F32, F16, BF16"):
        make_manifest(dtype="F64")


def test_rejects_long_description():
    with pytest.raises(InvalidManifest, match="`description` has 5000 characters; the limit is 4096"):
        make_manifest(description="x" * 5000)


def test_rejects_huge_evaluation():
    with pytest.raises(InvalidManifest, match="`evaluation` is .* bytes; the limit is 65536"):
        make_manifest(evaluation={"x": "y" * 70000})


def test_rejects_nan_in_evaluation():
    with pytest.raises(InvalidManifest, match="`evaluation` contains NaN or Infinity"):
        make_manifest(evaluation={"x": float("nan")})


def test_rejects_bad_dependency_name():
    data = make_manifest().to_dict() | {"dependencies": [{"name": "../x", "spec": "^1"}]}
    with pytest.raises(InvalidManifest, match="`dependencies` entry name `../x` is not a valid patch name"):
        Manifest.from_dict(data)


def test_rejects_bad_domain():
    with pytest.raises(InvalidManifest, match="domain `tox icity` is not a valid patch name"):
        make_manifest(domains=("tox icity",))


def test_rejects_future_format_version():
    data = make_manifest().to_dict() | {"format_version": 9}
    with pytest.raises(InvalidManifest, match="format_version 9 is not supported"):
        Manifest.from_dict(data)


def test_strict_json_rejects_nan_and_duplicates():
    with pytest.raises(InvalidManifest, match="contains `NaN`"):
        strict_json_loads('{"a": NaN}', "manifest")
    with pytest.raises(InvalidManifest, match="duplicate keys: a"):
        strict_json_loads('{"a": 1, "a": 2}', "manifest")
