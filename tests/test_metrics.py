"""Transfer / Avg. / Last against values worked out by hand (never recomputed with the code under test)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.datasets import catalog
from pipeline.evaluation.metrics import Summary, summarize

NAMES3 = ["a", "b", "c"]
# Rows: after task 1, 2, 3; columns: datasets a, b, c.
A3 = np.array(
    [
        [90.0, 40.0, 30.0],
        [85.0, 92.0, 36.0],
        [80.0, 88.0, 95.0],
    ]
)

ORDER_I = catalog.orders()["I"]


def formula_11() -> np.ndarray:
    """11 x 11 matrix, 1-based i (row), j (column): 50 + 2i + 2j above the diagonal (i < j), 80 + j on/below."""
    return np.array([[50.0 + 2 * i + 2 * j if i < j else 80.0 + j for j in range(1, 12)] for i in range(1, 12)])


def test_hand_made_3x3():
    s = summarize(A3, NAMES3)
    assert isinstance(s, Summary)
    # transfer_b = A[1][b] = 40; transfer_c = (A[1][c] + A[2][c]) / 2 = (30 + 36) / 2 = 33
    # Transfer = (40 + 33) / 2 = 36.5
    assert s.transfer == pytest.approx(36.5)
    # Row sums: 90+40+30 = 160, 85+92+36 = 213, 80+88+95 = 263; total 636; Avg = 636 / 9 = 70.666...
    assert s.avg == pytest.approx(636 / 9)
    # Last = 263 / 3 = 87.666...
    assert s.last == pytest.approx(263 / 3)
    assert list(s.per_dataset) == NAMES3
    assert math.isnan(s.per_dataset["a"]["transfer"])
    assert s.per_dataset["b"]["transfer"] == pytest.approx(40.0)
    assert s.per_dataset["c"]["transfer"] == pytest.approx(33.0)
    # Column means: a = (90+85+80)/3 = 85, b = (40+92+88)/3 = 220/3, c = (30+36+95)/3 = 161/3
    assert s.per_dataset["a"]["avg"] == pytest.approx(85.0)
    assert s.per_dataset["b"]["avg"] == pytest.approx(220 / 3)
    assert s.per_dataset["c"]["avg"] == pytest.approx(161 / 3)
    assert [s.per_dataset[n]["last"] for n in NAMES3] == [80.0, 88.0, 95.0]


def test_below_diagonal_does_not_change_transfer():
    # Transfer only reads entries above the diagonal; forgetting (below it) must not move it.
    worse = A3.copy()
    worse[1, 0] = worse[2, 0] = worse[2, 1] = 0.0
    assert summarize(worse, NAMES3).transfer == pytest.approx(36.5)


def test_published_format_11x11():
    s = summarize(formula_11(), ORDER_I)
    # transfer_j = mean_{i=1..j-1} (50 + 2i + 2j) = 50 + 2j + 2 * (j/2) = 50 + 3j, for j = 2..11
    # Transfer = 50 + 3 * mean(2..11) = 50 + 3 * 6.5 = 69.5
    assert s.transfer == pytest.approx(69.5)
    # Above-diagonal sum: sum_{j=2..11} (j-1)(50 + 2j) + 2 * (j-1)j/2 = sum (j-1)(50 + 3j)
    #   = 50 * sum(j-1) + 3 * sum j(j-1) = 50 * 55 + 3 * 440 = 2750 + 1320 = 4070
    #   (sum_{j=2..11} j(j-1) = (506 - 1) - (66 - 1) = 440, with sum_{1..11} j^2 = 506, sum j = 66)
    # On/below sum: sum_{j=1..11} (12-j)(80+j) = sum (960 - 68j - j^2) = 10560 - 68*66 - 506 = 5566
    # Avg = (4070 + 5566) / 121 = 9636 / 121 = 79.636...
    assert s.avg == pytest.approx(9636 / 121)
    # Last row is all on/below: sum_{j=1..11} (80 + j) = 880 + 66 = 946; Last = 946 / 11 = 86.0
    assert s.last == pytest.approx(86.0)
    assert s.per_dataset["sun397"]["transfer"] == pytest.approx(50 + 3 * 11)  # j = 11 -> 83
    assert s.per_dataset["sun397"]["last"] == pytest.approx(91.0)
    # Column 1 (aircraft) is all on/below: 81 in every row.
    assert s.per_dataset["aircraft"]["avg"] == pytest.approx(81.0)


def test_partial_rows_of_11x11():
    s = summarize(formula_11()[:4], ORDER_I)
    # Only rows 1..4 exist. Column j uses rows 1..min(j-1, 4):
    #   j = 2..5: 50 + 3j -> 56, 59, 62, 65 (sum 242)
    #   j = 6..11: mean_{i=1..4}(50 + 2i + 2j) = 50 + 5 + 2j -> 67, 69, 71, 73, 75, 77 (sum 432)
    # Transfer = (242 + 432) / 10 = 67.4
    assert s.transfer == pytest.approx(67.4)
    # Row sums: 81 + sum_{j=2..11}(52+2j) = 81 + 650 = 731;  163 + sum_{j=3..11}(54+2j) = 163 + 612 = 775;
    #           246 + sum_{j=4..11}(56+2j) = 246 + 568 = 814;  330 + sum_{j=5..11}(58+2j) = 330 + 518 = 848
    # Avg = (731 + 775 + 814 + 848) / 44 = 3168 / 44 = 72.0
    assert s.avg == pytest.approx(72.0)
    # Last = last available row (after task 4) = 848 / 11
    assert s.last == pytest.approx(848 / 11)
    # Not-yet-trained sun397 (j = 11): transfer 77, avg over rows 1..4 = 77, last = row 4 = 50 + 8 + 22 = 80
    assert s.per_dataset["sun397"]["transfer"] == pytest.approx(77.0)
    assert s.per_dataset["sun397"]["avg"] == pytest.approx(77.0)
    assert s.per_dataset["sun397"]["last"] == pytest.approx(80.0)


def test_partial_single_row():
    s = summarize(A3[:1], NAMES3)
    # Row 1 only: transfer_b = 40, transfer_c = 30 -> Transfer = 35; Avg = Last = 160 / 3
    assert s.transfer == pytest.approx(35.0)
    assert s.avg == pytest.approx(160 / 3)
    assert s.last == pytest.approx(160 / 3)


def test_single_dataset_has_no_transfer():
    s = summarize(np.array([[70.0]]), ["only"])
    assert math.isnan(s.transfer)
    assert s.avg == s.last == 70.0


@pytest.mark.parametrize(
    "acc, names, match",
    [
        (np.zeros((4, 3)), NAMES3, "more rows than columns"),
        (np.zeros(3), NAMES3, "2-D"),
        (np.zeros((0, 3)), NAMES3, "empty"),
        (np.zeros((3, 3)), ["a", "b"], "names"),
        (np.zeros((3, 3)), ["a", "a", "b"], "distinct"),
        (np.array([[1.0, np.nan]]), ["a", "b"], "NaN"),
    ],
)
def test_rejects_bad_shapes(acc, names, match):
    with pytest.raises(ValueError, match=match):
        summarize(acc, names)
