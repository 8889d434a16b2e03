"""llm-patch: soft-prefix safety patches for causal LMs, handled like software packages.

The root package is torch-free: the patch format, validator, signatures, key store and
fingerprints import only numpy, safetensors and cryptography, so the registry server can
use them without the model runtime. Model work lives in `llmpatch.model` (extra `runtime`).
"""

__version__ = "0.2.0"
