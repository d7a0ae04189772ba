"""The API's request bodies (validated by pydantic before a handler runs) and settings."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["ApiSettings", "ApprovalBody", "JobSubmit", "ReplyBody", "RevokeBody", "UploadStart"]

_TEXT = r"^[^\x00]*$"  # stored text: PostgreSQL refuses NUL characters


class ApiSettings(BaseModel):
    consortium: str
    max_upload_bytes: int = 4 << 30
    long_poll_seconds: float = 25.0
    body_stall_seconds: float = 30.0


class UploadStart(BaseModel):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class ApprovalBody(BaseModel):
    status: str = Field(pattern=r"^(pending|approved|rejected)$")
    # why a site declines (a reason class such as "its data set is under another contract")
    reason: str | None = Field(default=None, max_length=300, pattern=r"^[^\x00-\x1f\x7f]*$")


class ReplyBody(BaseModel):
    header: dict[str, Any]
    blob_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class JobSubmit(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=_TEXT)
    task_name: str = Field(min_length=1, max_length=200, pattern=_TEXT)
    bundle_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    initial_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    config: dict[str, Any]


class RevokeBody(BaseModel):
    reason: str = Field(min_length=1, max_length=500, pattern=_TEXT)
