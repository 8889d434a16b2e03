"""Request and response shapes. Inputs forbid unknown fields; outputs are built explicitly
from rows (never `from_attributes` on a table row), so columns such as `token_hash` or
`index_json` cannot leak into a response by accident."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


# -- inputs ------------------------------------------------------------------------------

class YankIn(Input):
    reason: str = Field(min_length=1, max_length=1024)


class UnyankIn(Input):
    pass


class DeprecateIn(Input):
    message: str | None = Field(default=None, max_length=1024)


class KeyIn(Input):
    public_key_pem: str = Field(max_length=4096)


class TokenIn(Input):
    description: str = Field(default="", max_length=256)
    scopes: list[str] = Field(min_length=1, max_length=64)


# -- outputs -----------------------------------------------------------------------------

class BaseModelOut(BaseModel):
    architecture: str
    weights: str
    name: str = ""


class RelationOut(BaseModel):
    name: str
    spec: str = "*"


class VersionOut(BaseModel):
    version: str
    sha256: str
    size: int
    file_url: str
    signature_sha256: str
    signature_size: int
    signature_url: str
    key_id: str
    base_model: BaseModelOut
    n_virtual_tokens: int
    hidden_size: int
    dtype: str
    domains: list[str]
    dependencies: list[RelationOut]
    conflicts: list[RelationOut]
    yanked: bool
    yank_reason: str | None
    uploaded_at: str
    uploaded_by: str
    manifest: dict[str, Any]


class IndexOut(BaseModel):
    name: str
    owner: str
    deprecated: str | None
    versions: list[VersionOut]


class PublishOut(BaseModel):
    name: str
    version: str
    sha256: str
    size: int
    signature_sha256: str
    key_id: str
    created: bool
    file_url: str
    signature_url: str


class SearchResult(BaseModel):
    name: str
    latest_version: str | None
    description: str
    domains: list[str]
    base_models: list[str]
    deprecated: str | None
    updated_at: str


class SearchOut(BaseModel):
    results: list[SearchResult]


class KeyOut(BaseModel):
    key_id: str
    public_key_pem: str
    added_at: str
    revoked_at: str | None


class KeysOut(BaseModel):
    keys: list[KeyOut]


class AuditEventOut(BaseModel):
    id: int
    at: str
    actor: str
    action: str
    version: str | None
    detail: dict[str, Any]


class AuditOut(BaseModel):
    events: list[AuditEventOut]


class DeprecateOut(BaseModel):
    name: str
    deprecated: str | None


class MeOut(BaseModel):
    user: str
    token_id: int
    scopes: list[str]


class TokenOut(BaseModel):
    id: int
    description: str
    scopes: list[str]
    created_at: str
    revoked_at: str | None


class TokensOut(BaseModel):
    tokens: list[TokenOut]


class NewTokenOut(BaseModel):
    id: int
    token: str
    scopes: list[str]
