"""Which datasets an order reads, and all of them checked at once: training stops on the first run with every
missing dataset listed (not the first one found missing), and `gift doctor` reports each with its layout and source.
"""

from __future__ import annotations

from pathlib import Path

from . import catalog, cil, mtil
from .mtil import CheckResult, DatasetMissingError


class MissingDatasetsError(FileNotFoundError):
    """Datasets of an order that are not under the data root (every one of them, in the order's order), each with
    the layout expected and how to get it (as ``DatasetMissingError`` says it), then where to look for the rest."""

    def __init__(self, order: str, data_root: Path, missing: list[DatasetMissingError]):
        self.order, self.data_root, self.missing = order, data_root, missing
        names = ", ".join(e.dataset for e in missing)
        super().__init__(
            f"{len(missing)} dataset{'s' if len(missing) > 1 else ''} of order {order} missing under --data-root "
            f"{data_root}: {names}.\n" + "\n".join(str(e) for e in missing)
            + f"\nEvery problem of the run at once (weights, data, pool sets, disk), each with its fix: "
              f"gift doctor --order {order} --data-root {data_root}")


def order_datasets(order: str) -> list[str]:
    """The datasets ``order`` trains and evaluates on, as ``gift data check`` names them (none for the built-in mini
    benchmarks): an MTIL order's tasks, a CIL setting's dataset."""
    if catalog.is_cil(order):
        dataset = catalog.get_setting(order).dataset
        return [] if dataset in catalog.MINI_TASKS else [dataset]
    return [t for t in catalog.get_order(order) if t not in catalog.MINI_TASKS]


def _folder(name: str) -> str:
    return mtil.folder(name) if name in mtil.MTIL_DATASETS else cil.folder(name)


def check_order(order: str, data_root: str | Path) -> list[CheckResult]:
    """Found / missing / broken, with counts, for every dataset of ``order`` (``gift data check``'s checks)."""
    names = order_datasets(order)
    in_mtil = [n for n in names if n in mtil.MTIL_DATASETS]  # CIFAR100's folder is MTIL's
    return mtil.check(data_root, in_mtil) + cil.check(data_root, [n for n in names if n not in in_mtil])


def require_datasets(order: str, data_root: str | Path | None) -> None:
    """Raise :class:`MissingDatasetsError` naming every dataset of ``order`` whose folder is absent (a cheap look:
    reading each one still checks its files), or ``ValueError`` when the order needs a data root and has none."""
    names = order_datasets(order)
    if not names:
        return
    if data_root is None:
        raise ValueError(f"order {order} needs --data-root (the folder holding {', '.join(names)}; see "
                         f"`gift doctor --order {order}`)")
    root = Path(data_root).expanduser()
    missing = []
    for name in names:
        if not (root / _folder(name)).is_dir():
            try:  # raises DatasetMissingError, with the dataset's layout and source, before reading anything
                (mtil.load_split if name in mtil.MTIL_DATASETS else cil.load_split)(name, root, "test")
            except DatasetMissingError as e:
                missing.append(e)
    if missing:
        raise MissingDatasetsError(order, root, missing)
