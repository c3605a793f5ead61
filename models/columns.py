"""Arrow column helpers shared by the models and the pipeline."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_CODE_BOUND = 1 << 62


def distinct_codes(columns: list[pa.ChunkedArray] | list[pa.Array]) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
    """For each row, the number of its distinct combination of ``columns`` (NULL apart from any
    string), and the combinations in that numbering: Python then runs once per combination.

    Each column is dictionary-encoded and the rows' codes combined arithmetically; when the
    combined codes could overflow they are renumbered first (many columns of many values each)."""
    if not len(columns[0]):
        return np.zeros(0, dtype=np.int64), []
    code = np.zeros(len(columns[0]), dtype=np.int64)
    bound = 1
    dictionaries, indices = [], []
    for column in columns:
        whole = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        encoded = pc.dictionary_encode(whole)
        size = len(encoded.dictionary) + 1
        index = encoded.indices.fill_null(size - 1).to_numpy(zero_copy_only=False).astype(np.int64)
        if bound * size >= _CODE_BOUND:
            _, code = np.unique(code, return_inverse=True)
            bound = int(code.max()) + 1
        code = code * size + index
        bound *= size
        dictionaries.append(encoded.dictionary.to_pylist() + [None])
        indices.append(index)
    _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
    values = [tuple(dictionary[i] for dictionary, i in zip(dictionaries, row, strict=True))
              for row in np.stack([index[first] for index in indices], axis=1).tolist()]
    return inverse, values
