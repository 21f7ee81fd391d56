"""Summary metrics: MTIL's Transfer / Avg. / Last from an accuracy matrix, and CIL's Avg / Last
(:func:`summarize_cil`, at the end).

The accuracy matrix ``acc`` has shape ``(k, T)`` with ``1 <= k <= T``: ``acc[i, j]`` is the top-1 accuracy
(in percent) on dataset ``j``'s test split after training task ``i`` (0-based here; rows follow the
training order, columns are the datasets in the same order). ``k == T`` is a finished run; ``k < T`` is a
run in progress whose first ``k`` tasks are done.

The formulas are those of the reference code (ZSCL / GIFT), which produced the published numbers. In
1-based notation, for a full ``T x T`` matrix ``A``:

* ``transfer_j = mean(A[1..j-1, j])`` for ``j >= 2`` (entries *above* the diagonal: accuracy on a dataset
  before it is trained on); undefined (NaN) for the first dataset.
* ``Transfer = mean_{j=2..T} transfer_j``.
* ``Avg = mean`` of all ``T*T`` entries; ``avg_j`` = mean of column ``j``.
* ``Last = mean`` of the last row; ``last_j = A[T, j]``.

Partial matrices (``k < T`` rows) use only the rows that exist:

* ``transfer_j = mean(A[1..min(j-1, k), j])``: every column ``j >= 2`` has at least row 1 above its
  diagonal, so every such column still counts, averaged over its available above-diagonal rows.
* ``Avg`` = mean of the ``k*T`` available entries; ``avg_j`` = mean of column ``j`` over the ``k`` rows.
* ``Last`` = mean of the last available row (row ``k``); ``last_j = A[k, j]``.

The zero-shot accuracies of the initial model are not part of any of these formulas.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Summary:
    """The three MTIL numbers plus their per-dataset breakdown.

    ``per_dataset`` maps each dataset name (in column order) to ``{"transfer", "avg", "last"}``;
    ``transfer`` is NaN for the first dataset (nothing is above its diagonal).
    """

    transfer: float
    avg: float
    last: float
    per_dataset: dict[str, dict[str, float]]


def validate(acc: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Return ``acc`` as a float ``(k, T)`` array after checking it against ``names`` (length ``T``).

    Raises ``ValueError`` unless ``acc`` is 2-D with ``1 <= k <= T`` rows, ``T == len(names)`` columns,
    only finite values, and ``names`` are distinct.
    """
    arr = np.asarray(acc, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"accuracy matrix must be 2-D (k x T), got shape {arr.shape}")
    k, t = arr.shape
    if t == 0 or k == 0:
        raise ValueError(f"accuracy matrix is empty: shape {arr.shape}")
    if k > t:
        raise ValueError(
            f"accuracy matrix has more rows than columns: shape {arr.shape}; expected T x T or k x T with k <= T"
        )
    if len(names) != t:
        raise ValueError(f"{len(names)} dataset names for {t} matrix columns")
    if len(set(names)) != len(names):
        raise ValueError(f"dataset names must be distinct: {list(names)}")
    if not np.isfinite(arr).all():
        raise ValueError("accuracy matrix contains NaN or infinite values; pass only the finished rows")
    return arr


def column_transfer(arr: np.ndarray) -> np.ndarray:
    """Per-column transfer of a ``(k, T)`` matrix: shape ``(T,)``, NaN for column 0.

    Column ``j`` (0-based, ``j >= 1``) averages rows ``0 .. min(j, k) - 1``, i.e. the available entries
    strictly above the diagonal.
    """
    k, t = arr.shape
    out = np.full(t, np.nan)
    for j in range(1, t):
        out[j] = arr[: min(j, k), j].mean()
    return out


def summarize(acc: np.ndarray, names: Sequence[str]) -> Summary:
    """Transfer / Avg. / Last of a full ``(T, T)`` or partial ``(k, T)`` accuracy matrix (percent).

    See the module docstring for the formulas and how partial matrices are treated. With a single
    dataset (``T == 1``) Transfer is NaN.
    """
    arr = validate(acc, names)
    transfer_j = column_transfer(arr)
    avg_j = arr.mean(axis=0)
    last_j = arr[-1]
    per_dataset = {
        name: {"transfer": float(transfer_j[j]), "avg": float(avg_j[j]), "last": float(last_j[j])}
        for j, name in enumerate(names)
    }
    transfer = float(transfer_j[1:].mean()) if arr.shape[1] > 1 else math.nan
    return Summary(transfer=transfer, avg=float(arr.mean()), last=float(last_j.mean()), per_dataset=per_dataset)


# --------------------------------------------------------------------------- class-incremental (CIL)


@dataclass(frozen=True)
class CilSummary:
    """CIL's numbers over ``k`` finished steps of ``T``: ``avg`` = mean of acc_1..acc_k (iCaRL's average incremental
    accuracy), ``last`` = acc_k, where acc_i is the accuracy on every class seen after step i (one head, no task
    id); ``forgetting`` = mean over steps j < k of (best accuracy on step j's classes after steps j..k−1) − (after
    step k), from the step matrix (NaN with fewer than two steps or without the matrix). ``transfer`` is NaN: it
    has no CIL counterpart (kept so CIL and MTIL rows share a table)."""

    avg: float
    last: float
    forgetting: float
    seen: tuple[float, ...]
    transfer: float = math.nan


def summarize_cil(seen: Sequence[float], acc: np.ndarray | None = None) -> CilSummary:
    """Avg / Last (and forgetting) of a CIL run from ``seen`` = [acc_1, ..., acc_k] (percent) and, optionally, the
    ``(k, T)`` step matrix ``acc[i, j]`` = accuracy on step j's classes after step i (NaN for j > i).

    Raises ``ValueError`` on an empty or non-finite ``seen``, or a matrix that does not have ``len(seen)`` rows with
    finite entries on and below the diagonal.
    """
    values = np.asarray(seen, dtype=float)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"seen-class accuracies must be a non-empty list, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("seen-class accuracies contain NaN or infinite values; pass only the finished steps")
    forgetting = math.nan
    if acc is not None:
        arr = np.asarray(acc, dtype=float)
        k = len(values)
        if arr.ndim != 2 or arr.shape[0] != k or arr.shape[1] < k:
            raise ValueError(f"step matrix of shape {arr.shape} for {k} finished steps; expected ({k}, T >= {k})")
        if not np.isfinite(arr[np.tril_indices(k)]).all():
            raise ValueError("step matrix has NaN or infinite values on or below the diagonal")
        if k > 1:
            forgetting = float(np.mean([arr[j : k - 1, j].max() - arr[k - 1, j] for j in range(k - 1)]))
    return CilSummary(avg=float(values.mean()), last=float(values[-1]), forgetting=forgetting,
                      seen=tuple(float(v) for v in values))
