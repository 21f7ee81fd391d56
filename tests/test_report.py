"""write_report: files, CSV round trip, hand-computed numbers in results.md, published comparison, figures."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.evaluation import report
from pipeline.evaluation.report import PUBLISHED, WARN_MARK, ZERO_SHOT_ORDER_I, write_report
from tests.test_metrics import A3, NAMES3, ORDER_I

# The hand-checked 3x3 matrix of the metrics tests, and Order I's datasets.
KEYS = {"csv", "npy", "md", "heatmap", "curves"}


def formula_11() -> np.ndarray:
    """1-based i, j: 50 + 2i + 2j above the diagonal, 80 + j on/below (see test_metrics for the sums)."""
    return np.array([[50.0 + 2 * i + 2 * j if i < j else 80.0 + j for j in range(1, 12)] for i in range(1, 12)])


def table_row(md: str, label: str, section: str | None = None) -> list[str]:
    """Cells of the first markdown table row starting with ``| label |`` (after ``section`` if given)."""
    if section is not None:
        md = md[md.index(section) :]
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r}")


def read_csv(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], [r[0] for r in rows[1:]], np.array([[float(v) for v in r[1:]] for r in rows[1:]])


def assert_png(path: Path, min_w: int = 300, min_h: int = 150) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG"
        w, h = im.size
    assert min_w <= w <= 4000 and min_h <= h <= 4000, (w, h)


def assert_no_temp_files(run_dir: Path) -> None:
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "acc_matrix.csv",
        "acc_matrix.npy",
        "acc_matrix.png",
        "curves.png",
        "results.md",
    ]


def test_full_3x3(tmp_path):
    out = write_report(tmp_path / "run", names=NAMES3, acc=A3, method="gift", order=None, comparable=False)
    assert set(out) == KEYS and all(p.is_file() for p in out.values())
    assert_no_temp_files(tmp_path / "run")

    header, tasks, values = read_csv(out["csv"])
    assert header == ["after_task", "a", "b", "c"]
    assert tasks == NAMES3
    np.testing.assert_array_equal(values, A3)
    assert out["csv"].read_text().splitlines()[1] == "a,90.00,40.00,30.00"
    np.testing.assert_array_equal(np.load(out["npy"]), A3)

    md = out["md"].read_text(encoding="utf-8")
    assert md.startswith("# ")
    # By hand: Transfer = (40 + (30+36)/2) / 2 = 36.5; Avg = 636/9 = 70.67; Last = 263/3 = 87.67
    # Per dataset: transfer –, 40.0, 33.0; avg 85.0, 73.3 (220/3), 53.7 (161/3); last 80, 88, 95
    assert table_row(md, "Transfer") == ["Transfer", "–", "40.0", "33.0", "36.5"]
    assert table_row(md, "Avg.") == ["Avg.", "85.0", "73.3", "53.7", "70.7"]
    assert table_row(md, "Last") == ["Last", "80.0", "88.0", "95.0", "87.7"]
    assert table_row(md, "after b") == ["after b", "85.0", "**92.0**", "36.0"]
    assert "not shown" in md and "Ours vs published" not in md and "⚠" not in md

    assert_png(out["heatmap"])
    assert_png(out["curves"])


def test_partial_2x3(tmp_path):
    acc = A3[:2]
    out = write_report(
        tmp_path, names=NAMES3, acc=acc, method="gift", order="I", comparable=False, title="Run in progress"
    )
    assert_no_temp_files(tmp_path)
    header, tasks, values = read_csv(out["csv"])
    assert tasks == ["a", "b"]
    np.testing.assert_array_equal(values, acc)
    np.testing.assert_array_equal(np.load(out["npy"]), acc)

    md = out["md"].read_text(encoding="utf-8")
    assert md.startswith("# Run in progress\n")
    assert "2 of 3 tasks" in md
    # By hand (rows 1-2 only): Transfer = (40 + (30+36)/2) / 2 = 36.5; Avg = (160 + 213) / 6 = 62.17; Last = 213/3 = 71.0
    # Per dataset avg: (90+85)/2 = 87.5, (40+92)/2 = 66.0, (30+36)/2 = 33.0; last = row 2
    assert table_row(md, "Transfer") == ["Transfer", "–", "40.0", "33.0", "36.5"]
    assert table_row(md, "Avg.") == ["Avg.", "87.5", "66.0", "33.0", "62.2"]
    assert table_row(md, "Last") == ["Last", "85.0", "92.0", "36.0", "71.0"]
    assert "after c" not in md
    assert_png(out["heatmap"], min_h=100)
    assert_png(out["curves"])


def test_comparable_marks_only_large_differences(tmp_path):
    out = write_report(tmp_path, names=ORDER_I, acc=formula_11(), method="gift", order="I", comparable=True)
    md = out["md"].read_text(encoding="utf-8")
    assert PUBLISHED[("gift", "I")] == (69.3, 77.3, 86.0)
    section = "Ours vs published"
    # By hand (test_metrics): Transfer 69.5, Avg 9636/121 = 79.64, Last 86.0
    # Δ: 69.5 - 69.3 = +0.2 (ok); 79.6 - 77.3 = +2.3 (flagged); 86.0 - 86.0 = +0.0 (ok)
    assert table_row(md, "Transfer", section) == ["Transfer", "69.5", "69.3", "+0.2", "ok"]
    assert table_row(md, "Avg.", section) == ["Avg.", "79.6", "77.3", "+2.3", WARN_MARK]
    assert table_row(md, "Last", section) == ["Last", "86.0", "86.0", "+0.0", "ok"]
    assert md.count("⚠") == 1
    assert "not shown" not in md
    assert_png(out["heatmap"], min_w=600)
    assert_png(out["curves"], min_w=600)


def test_comparable_within_one_point_has_no_mark(tmp_path, monkeypatch):
    # Published (70.5, 79.0, 85.0) vs ours (69.5, 79.6, 86.0): Δ = -1.0, +0.6, +1.0, all |Δ| <= 1.
    monkeypatch.setitem(report.PUBLISHED, ("gift", "I"), (70.5, 79.0, 85.0))
    md = write_report(tmp_path, names=ORDER_I, acc=formula_11(), method="gift", order="I", comparable=True)[
        "md"
    ].read_text(encoding="utf-8")
    assert table_row(md, "Transfer", "Ours vs published")[3] == "-1.0"
    assert table_row(md, "Last", "Ours vs published")[3] == "+1.0"
    assert "⚠" not in md
    assert "70.5" in md


def test_comparable_without_published_entry(tmp_path):
    md = write_report(tmp_path, names=NAMES3, acc=A3, method="mine", order="I", comparable=True)["md"].read_text(
        encoding="utf-8"
    )
    assert "No published numbers" in md and "⚠" not in md


def test_zero_shot_row(tmp_path):
    zs = list(ZERO_SHOT_ORDER_I.values())
    assert list(ZERO_SHOT_ORDER_I) == ORDER_I
    # 24.3+88.4+68.2+44.6+54.9+71.0+88.5+59.4+89.0+64.7+65.2 = 718.2; / 11 = 65.29 -> 65.3
    md = write_report(
        tmp_path, names=ORDER_I, acc=formula_11(), method="gift", order="I", comparable=False, zero_shot=zs
    )["md"].read_text(encoding="utf-8")
    row = table_row(md, "Zero-shot")
    assert row[1] == "24.3" and row[-1] == "65.3"


def test_overwrites_previous_report(tmp_path):
    write_report(tmp_path, names=NAMES3, acc=A3[:1], method="gift", order="I", comparable=False)
    out = write_report(tmp_path, names=NAMES3, acc=A3, method="gift", order="I", comparable=False)
    np.testing.assert_array_equal(read_csv(out["csv"])[2], A3)
    assert_no_temp_files(tmp_path)


def test_rejects_bad_matrix_without_writing(tmp_path):
    with pytest.raises(ValueError, match="more rows"):
        write_report(
            tmp_path / "run", names=["a", "b"], acc=np.zeros((3, 2)), method="gift", order="I", comparable=False
        )
    assert not (tmp_path / "run").exists()


def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    def boom(fig, path):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "_save_figure", boom)
    with pytest.raises(RuntimeError):
        write_report(tmp_path, names=NAMES3, acc=A3, method="gift", order="I", comparable=False)
    # the text files were fully written; nothing temporary or half-written remains
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acc_matrix.csv", "acc_matrix.npy", "results.md"]


def test_crash_during_write_keeps_old_file(tmp_path):
    target = tmp_path / "results.md"
    target.write_text("old complete report")

    def half_then_crash(fh):
        fh.write(b"half a rep")
        raise OSError("crash")

    with pytest.raises(OSError):
        report._atomic_write(target, half_then_crash)
    assert target.read_text() == "old complete report"
    assert [p.name for p in tmp_path.iterdir()] == ["results.md"]
