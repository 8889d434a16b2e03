"""The version-range grammar of docs/specs.md: each form, pre-release rules, and refusals."""

import pytest

from llmpatch.client import InvalidSpec, PatchRequest, VersionRange

VERSIONS = ["0.1.0", "0.1.5", "0.2.0", "1.0.0", "1.2.0", "1.2.1", "1.2.9", "1.3.0-rc.1", "1.3.0", "1.10.0", "2.0.0-beta.1", "2.0.0", "2.1.0"]


def matching(spec, include_prerelease=False):
    r = VersionRange.parse(spec)
    return [v for v in VERSIONS if r.contains(v, include_prerelease=include_prerelease)]


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("1.2", ["1.2.0", "1.2.1", "1.2.9"]),
        ("1", ["1.0.0", "1.2.0", "1.2.1", "1.2.9", "1.3.0", "1.10.0"]),
        ("1.2.1", ["1.2.1"]),
        ("=1.2.1", ["1.2.1"]),
        ("^1.2", ["1.2.0", "1.2.1", "1.2.9", "1.3.0", "1.10.0"]),
        ("^1.2.1", ["1.2.1", "1.2.9", "1.3.0", "1.10.0"]),
        ("^0.1.1", ["0.1.5"]),
        ("^0", ["0.1.0", "0.1.5", "0.2.0"]),
        ("~1.2.1", ["1.2.1", "1.2.9"]),
        ("~1.2", ["1.2.0", "1.2.1", "1.2.9"]),
        ("~1", ["1.0.0", "1.2.0", "1.2.1", "1.2.9", "1.3.0", "1.10.0"]),
        (">=1.0,<2", ["1.0.0", "1.2.0", "1.2.1", "1.2.9", "1.3.0", "1.10.0"]),
        (">=1.0, <2", ["1.0.0", "1.2.0", "1.2.1", "1.2.9", "1.3.0", "1.10.0"]),
        (">1.2", ["1.3.0", "1.10.0", "2.0.0", "2.1.0"]),
        (">1.2.1,<=1.3", ["1.2.9", "1.3.0"]),
        ("<=1.2", ["0.1.0", "0.1.5", "0.2.0", "1.0.0", "1.2.0", "1.2.1", "1.2.9"]),
        ("1.2.x", ["1.2.0", "1.2.1", "1.2.9"]),
        ("*", [v for v in VERSIONS if "-" not in v]),
        ("", [v for v in VERSIONS if "-" not in v]),
        ("<1 || >=2.1", ["0.1.0", "0.1.5", "0.2.0", "2.1.0"]),
    ],
)
def test_range_forms(spec, expected):
    assert matching(spec) == expected


def test_prerelease_only_when_named_on_the_same_version():
    assert matching("^1.3.0-rc.1") == ["1.3.0-rc.1", "1.3.0", "1.10.0"]
    assert matching("=2.0.0-beta.1") == ["2.0.0-beta.1"]
    assert "2.0.0-beta.1" not in matching("^1.3.0-rc.1")  # another version's pre-release stays out
    assert "1.3.0-rc.1" not in matching("^1.2")


def test_prerelease_when_the_caller_opts_in():
    assert matching("^1.2", include_prerelease=True) == ["1.2.0", "1.2.1", "1.2.9", "1.3.0-rc.1", "1.3.0", "1.10.0"]


def test_upper_bound_excludes_prereleases_of_the_bound():
    assert matching("<2", include_prerelease=True)[-1] == "1.10.0"


def test_build_metadata_is_ignored():
    assert VersionRange.parse("=1.2.1").contains("1.2.1+build.5")


@pytest.mark.parametrize("spec", ["1.2.3.4", "^x.1", "1.x.3", ">=1.0,", "abc", "1.2-rc", "=>1.0", "é"])
def test_bad_ranges_are_refused_with_a_pointer_to_the_grammar(spec):
    with pytest.raises(InvalidSpec) as info:
        VersionRange.parse(spec)
    assert info.value.exit_code == 2


def test_request_parsing():
    request = PatchRequest.parse("Toxicity_Filter@^1.2")
    assert (request.name, request.key, str(request.range)) == ("Toxicity_Filter", "toxicity-filter", "^1.2")
    assert str(PatchRequest.parse("toxicity")) == "toxicity"
    assert PatchRequest.parse("toxicity").range.is_any


@pytest.mark.parametrize("text, message", [
    ("toxicity@", "`toxicity@` has `@` but no version range"),
    ("1tox@1", "patch name `1tox` is not a valid patch name"),
    ("hf://org/name@main", "`hf://org/name@main` is a Hugging Face reference, not a registry request"),
])
def test_bad_requests(text, message):
    with pytest.raises(InvalidSpec) as info:
        PatchRequest.parse(text)
    assert str(info.value) == message
