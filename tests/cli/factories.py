"""Test data for the client and CLI tests, as plain functions."""

from __future__ import annotations

from typing import Any

import numpy as np


class Frame:
    """Just what scikit-learn and Berth read from a dataframe; pandas is not a dependency."""

    def __init__(self, columns: dict[str, list[Any]]) -> None:
        self.columns = list(columns)
        self.dtypes = [np.asarray(v).dtype for v in columns.values()]
        self._data = np.array(list(zip(*columns.values(), strict=True)), dtype=object)

    def to_numpy(self) -> np.ndarray[Any, Any]:
        return self._data
