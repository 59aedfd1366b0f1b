"""Pieces shared by the drivers' validated data files (register profiles, ECHONET Lite EPC
tables): frozen models that refuse unknown keys, and the public source a table was taken from.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    """A data-file model: immutable, and an unknown key is an error."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Source(Frozen):
    """The public document a table was taken from."""

    publisher: str = Field(min_length=1)
    title: str = Field(min_length=1)
    version: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://\S+$")
    notes: str = ""
