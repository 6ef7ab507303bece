"""Columnar tables: frozen dataclasses of equally long numpy arrays.

The model's events and the transport's rows and messages are all such tables; this base
gives them concatenation, selection and filling in place, so a day's traffic can be written
into tables sized in advance instead of existing twice in memory.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Self

import numpy as np
import numpy.typing as npt


class Columns:
    """Concatenation, selection and filling in place for dataclass tables of arrays."""

    @classmethod
    def allocate(cls, template: Self, rows: int) -> Self:
        """An uninitialised table of `rows` rows with the column types of `template`."""
        return cls(**{f.name: np.empty(rows, dtype=getattr(template, f.name).dtype) for f in fields(cls)})  # type: ignore[arg-type]

    def put(self, at: int, part: Self) -> None:
        """Copy `part` into rows at..at+len(part)."""
        for f in fields(self):  # type: ignore[arg-type]
            getattr(self, f.name)[at : at + len(part)] = getattr(part, f.name)

    @classmethod
    def concat(cls, parts: list[Self]) -> Self:
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})  # type: ignore[arg-type]

    def take(self, index: npt.ArrayLike) -> Self:
        return type(self)(**{f.name: getattr(self, f.name)[index] for f in fields(self)})  # type: ignore[arg-type]

    def __len__(self) -> int:
        first: Any = getattr(self, fields(self)[0].name)  # type: ignore[arg-type]
        return len(first)
