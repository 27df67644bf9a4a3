"""The base of every configuration table: unknown keys are errors, values are frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A table of the configuration file (``[dock]``, ``[[camera]]``, ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
