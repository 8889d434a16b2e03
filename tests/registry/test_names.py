"""Name rules: the core's ASCII pattern, reserved words, confusable skeletons."""

from __future__ import annotations

import pytest

from llmpatch.registry.errors import ApiError
from llmpatch.registry.names import check_patch_name, skeleton


@pytest.mark.parametrize("a,b", [("refusal", "refusa1"), ("refusal", "REFUSAI"), ("modern", "modem"),
                                 ("safe-guard", "safe_guard"), ("safe-guard", "safe--guard"), ("b0t", "bot")])
def test_confusable_names_share_a_skeleton(a, b):
    assert skeleton(a) == skeleton(b)


@pytest.mark.parametrize("a,b", [("refusal", "refuse"), ("toxicity", "toxicity2"), ("pii", "pi")])
def test_distinct_names_have_distinct_skeletons(a, b):
    assert skeleton(a) != skeleton(b)


@pytest.mark.parametrize("name,code", [("admin", "reserved_name"), ("ADMIN", "reserved_name"), ("adm1n", "reserved_name"),
                                       ("blobs", "reserved_name"), ("Api", "reserved_name"), ("../x", "invalid_name"),
                                       ("r\u0435fusal", "invalid_name"), ("", "invalid_name"), ("a" * 65, "invalid_name"),
                                       ("1patch", "invalid_name")])
def test_refused_names(name, code):
    with pytest.raises(ApiError) as info:
        check_patch_name(name)
    assert info.value.code == code and info.value.status == 400


def test_accepted_names_are_canonicalised():
    assert check_patch_name("Refusal_Core") == "refusal-core"
