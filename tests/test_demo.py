"""`gift demo --seed 0,1,2`: each number as mean ± std over seeds, checked against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.evaluation.spread import mean_std, spread, spread_table
from tests.conftest import run_gift

NAMES = ["mini-a", "mini-b", "mini-c"]
# Transfer (40 + (30 + 36) / 2) / 2 = 36.5, Avg 636 / 9, Last 263 / 3; the second seed is 2 points higher everywhere.
A = np.array([[90.0, 40.0, 30.0], [85.0, 92.0, 36.0], [80.0, 88.0, 95.0]])


def test_mean_and_sample_std_by_hand():
    assert mean_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, math.sqrt(5 / 3)))  # (2.25+.25+.25+2.25) / 3
    assert mean_std([7.0]) == (7.0, 0.0)
    with pytest.raises(ValueError):
        mean_std([])


def test_spread_over_two_seeds_by_hand():
    s = spread([A, A + 2], NAMES)
    root2 = math.sqrt(2)  # sample std of x and x + 2: sqrt((1 + 1) / 1)
    assert s.seeds == 2
    assert [v for pair in s.first_dataset for v in pair] == pytest.approx([91.0, root2, 86.0, root2, 81.0, root2])
    assert s.transfer == pytest.approx((37.5, root2))
    assert s.avg == pytest.approx((636 / 9 + 1, root2))
    assert s.last == pytest.approx((263 / 3 + 1, root2))
    assert spread_table({"gift": s}, "mini-a") == [
        "| method | mini-a after task 1 / 2 / 3 | Transfer | Avg. | Last |",
        "|---|---|---:|---:|---:|",
        "| gift | 91.0 ± 1.4 / 86.0 ± 1.4 / 81.0 ± 1.4 | 37.5 ± 1.4 | 71.7 ± 1.4 | 88.7 ± 1.4 |",
    ]
    one = spread([A], NAMES)
    assert spread_table({"finetune": one}, "mini-a")[2] == "| finetune | 90.0 / 85.0 / 80.0 | 36.5 | 70.7 | 87.7 |"
    with pytest.raises(ValueError, match="finished"):
        spread([A, A[:2]], NAMES)  # an unfinished run has no place in the table


def test_bad_seed_lists_are_refused_before_anything_runs(tmp_path):
    import typer

    from cli.common import parse_seeds

    r = run_gift("demo", "--seed", "0,x", "--out", tmp_path / "demo")
    assert r.returncode == 2 and "--seed" in r.stderr and "comma-separated" in " ".join(r.stderr.split()), r.stderr
    assert not (tmp_path / "demo").exists()
    assert parse_seeds("0") == [0] and parse_seeds("2,0,1") == [2, 0, 1]
    for bad, message in (("1,1", "distinct"), ("-1", "non-negative"), ("", "comma-separated")):
        with pytest.raises(typer.BadParameter, match=message):
            parse_seeds(bad)


def test_cil_table_over_seeds_by_hand():
    from pipeline.evaluation.metrics import summarize_cil
    from pipeline.evaluation.spread import cil_spread_table

    # seen-class accuracy after each of 3 steps; Avg = mean of the row, Last = its end
    runs = [summarize_cil([90.0, 60.0, 30.0]), summarize_cil([94.0, 62.0, 34.0])]
    assert (runs[0].avg, runs[0].last, runs[1].avg, runs[1].last) == pytest.approx((60.0, 30.0, 190 / 3, 34.0))
    row = (mean_std([r.avg for r in runs]), mean_std([r.last for r in runs]))
    assert cil_spread_table({"clts": row}, 2, {"clts": "4.9 kB (100 captions, UTF-8)"}) == [
        "| method | Avg. | Last | memory kept |",
        "|---|---:|---:|---|",
        # Avg: 60 and 63.3 -> 61.7 ± 2.4 (sample std of two values = |a - b| / sqrt 2); Last: 32.0 ± 2.8
        "| clts | 61.7 ± 2.4 | 32.0 ± 2.8 | 4.9 kB (100 captions, UTF-8) |",
    ]
