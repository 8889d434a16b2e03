"""The client's public surface is what `__all__` says, and every error is an LLMPatchError."""

import llmpatch.client as client
from llmpatch.errors import LLMPatchError


def test_all_names_exist_and_nothing_private_leaks():
    assert sorted(client.__all__) == client.__all__
    for name in client.__all__:
        assert hasattr(client, name), name
    public = {n for n in dir(client) if not n.startswith("_")} - {"cli", "demo"}
    assert public == set(client.__all__)


def test_client_errors_are_llmpatch_errors_with_documented_exit_codes():
    errors = [getattr(client, n) for n in client.__all__ if isinstance(getattr(client, n), type) and issubclass(getattr(client, n), Exception)]
    assert errors
    for error in errors:
        assert issubclass(error, LLMPatchError), error
        assert error.exit_code in (1, 2, 3, 4, 5), error
    assert client.ResolutionImpossible.exit_code == 5
    assert client.InvalidSpec.exit_code == 2
    assert client.MetadataVerificationError.exit_code == 4


def test_every_export_is_mapped_to_its_module():
    assert sorted(client._EXPORTS) == client.__all__


def test_listing_does_not_import_the_network_stack():
    """`patch list` and `patch why` read the lockfile only: no httpx, tuf, cryptography or torch."""
    import subprocess
    import sys

    code = ("import sys, llmpatch.client, llmpatch.client.cli, llmpatch.client._lockfile; "
            "print(sorted(m for m in ('httpx', 'tuf', 'cryptography', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
