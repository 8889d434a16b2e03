"""Errors by meaning. Each carries a short message and, separately, a hint for the user.

The CLI catches `LLMPatchError` at its edge, prints the message and hint, and exits with
`exit_code`; scripts can rely on these codes (README, "Exit codes").
"""


class LLMPatchError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class InvalidPatchFile(LLMPatchError):
    """A patch file (or its manifest) breaks the format: the file is refused as a whole."""

    exit_code = 3


class InvalidManifest(InvalidPatchFile):
    """The manifest inside a patch file is malformed or disagrees with the tensor."""


class VerificationError(LLMPatchError):
    """A security check failed: signature, digest, key or fingerprint. Always fails closed."""

    exit_code = 4


class SignatureError(VerificationError):
    """A signature is missing, malformed, by an unknown key, or does not match the bytes."""


class IncompatibleModel(VerificationError):
    """A patch was built for another base model than the one it is applied to."""


class KeyStoreError(LLMPatchError):
    """A key could not be found, created, imported or exported."""


class ModelLoadError(LLMPatchError):
    """A base model could not be found or loaded."""
