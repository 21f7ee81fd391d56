"""`gift shards ls | push | pull | info | verify | preview`: inspect, verify and share shard sets (image sets and
caption sets alike)."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from cli.common import clean_errors, console, out, print_json, print_whole
from cli.progress import TransferBar

shards_app = typer.Typer(no_args_is_help=True, help="Inspect, verify, preview and share shard sets and caption sets.")


def _summary(spec: dict) -> str:
    if spec.get("kind") == "captions":
        return (f"captions {spec['captioner']} · {spec['selection']} {spec['per_class']}/class · "
                f"beam {spec['num_beams']} ≤{spec['max_new_tokens']} tokens")
    if spec["generator"] == "reference":
        what = f"reference {spec['model']}"
    else:
        what = f"{spec['generator']} {spec['model']} · {spec['scheduler']} {spec['steps']} steps · cfg {spec['guidance']} · {spec['size']}px · {spec['dtype']}"
    if spec.get("captions"):
        what += f" · {spec['per_caption']} per caption of {spec['captions'][:16]}"
    return what


def _sets_table() -> Table:
    # The task and the hash are what `generate`, `info` and `pull` take: never wrapped or cut; the spec wraps.
    table = Table()
    table.add_column("task", no_wrap=True)
    table.add_column("hash", no_wrap=True, min_width=16)
    table.add_column("generator", ratio=1, overflow="fold")
    for name in ("samples", "MB", "complete"):
        table.add_column(name, no_wrap=True)
    return table


def _local_root(root: str) -> Path:
    """ROOT as a local folder of shard sets (or one set), or a ValueError saying what it is instead."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/(?!/)", root):
        scheme, _, rest = root.partition(":")
        raise ValueError(f"{root} is neither a folder nor a store URL: a store URL has two slashes after the scheme "
                         f"({scheme}://{rest.lstrip('/')})")
    path = Path(root)
    if not path.exists():
        raise ValueError(f"{root} does not exist: give a root of shard sets (gift generate --out, default shards-out), "
                         "a set directory ROOT/<task>/<hash>, or a store URL (ssh://host/path, https://...)")
    if not path.is_dir():
        raise ValueError(f"{root} is a file: give a root of shard sets (a folder holding <task>/<hash>/manifest.json), "
                         "a set directory, or a store URL")
    return path


@shards_app.command("ls")
def shards_ls(
    root: str = typer.Argument("shards-out", help="Root of shard sets, or a store URL (ssh://, https://, ...)."),
    as_json: bool = typer.Option(False, "--json", help="Print the sets as JSON (every field, full spec hashes)."),
) -> None:
    """List the sets under ROOT, or in a store: task, hash, spec summary, samples, MB, complete or not; then each
    set's path (or `pull` address), whole."""
    from shards.manifest import find_sets, load_manifest
    from shards.store import is_url

    if is_url(root):
        return _store_ls(str(root), as_json)
    with clean_errors("nothing was changed."):
        rows = []
        for path in find_sets(_local_root(str(root))):
            m = load_manifest(path)
            rows.append({"task": m["task"], "hash": m["spec_hash"][:16], "spec_hash": m["spec_hash"],
                         "generator": _summary(m["spec"]), "samples": m["samples"],
                         "planned_samples": m["planned_samples"], "bytes": m["bytes"], "complete": m["complete"],
                         "path": str(path)})
    if as_json:
        return print_json(rows)
    if not rows:
        out.print(f"no shard sets under {root} (expected {root}/<task>/<hash>/manifest.json)", markup=False)
        return
    table = _sets_table()
    for r in rows:
        table.add_row(r["task"], r["hash"], r["generator"], f"{r['samples']}/{r['planned_samples']}",
                      f"{r['bytes'] / 1e6:.1f}", "yes" if r["complete"] else "[yellow]no[/]")
    out.print(table)
    out.print("paths (gift shards info | verify | push PATH):")
    for r in rows:
        print_whole(r["path"])


def _store_ls(url: str, as_json: bool) -> None:
    from shards.store import list_sets, open_store

    with clean_errors("nothing was changed."):
        store = open_store(url)
        rows = []
        for s in list_sets(store):
            m = s.manifest
            row = {"task": s.task, "hash": s.hash16, "address": store.address(f"{s.task}/{s.hash16}"),
                   "problem": s.problem if m is None else None}
            if m is not None:
                row.update(spec_hash=m["spec_hash"], generator=_summary(m["spec"]), samples=m["samples"],
                           planned_samples=m["planned_samples"], bytes=m["bytes"], complete=m["complete"])
            rows.append(row)
    if as_json:
        return print_json(rows)
    if not rows:
        out.print(f"no shard sets in {url}", markup=False)
        return
    table = _sets_table()
    for r in rows:
        if "spec_hash" not in r:
            state = (f"[red]invalid[/] ({escape(r['problem'])})" if r["problem"]
                     else "[yellow]no manifest[/] (push in progress or interrupted)")
            table.add_row(r["task"], r["hash"], "", "", "", state)
            continue
        table.add_row(r["task"], r["hash"], r["generator"], f"{r['samples']}/{r['planned_samples']}",
                      f"{r['bytes'] / 1e6:.1f}", "yes" if r["complete"] else "[yellow]no[/]")
    out.print(table)
    out.print("pull with:")
    for r in rows:
        if "spec_hash" in r:
            print_whole(f"gift shards pull {r['address']}")


@shards_app.command("push")
def shards_push(
    set_path: Path = typer.Argument(..., help="A set directory (ROOT/<task>/<hash>), or a root: every set under it."),
    dest: str = typer.Argument(..., help="Store: a directory (shared/NFS mount), ssh://\\[user@]host\\[:port]/path, or any fsspec URL."),
) -> None:
    """Publish complete, verified sets to a store: content-addressed, resumable, the manifest written last."""
    from shards.manifest import find_sets, load_manifest
    from shards.push import push_set
    from shards.store import open_store

    with clean_errors("files already sent are kept (the manifest goes last); re-run the same command to resume."):
        sets = find_sets(set_path)
        if not sets:
            raise ValueError(f"no shard set under {set_path} (expected ROOT/<task>/<hash>/manifest.json)")
        if sets != [Path(set_path)]:  # a root: publish what is finished, say what is not
            unfinished = [p for p in sets if not load_manifest(p)["complete"]]
            for path in unfinished:
                out.print(f"[yellow]skipped[/] {path}: incomplete (finish it with the same `gift generate` command)")
            sets = [p for p in sets if p not in unfinished]
            if not sets:
                raise ValueError(f"no complete shard set under {set_path}; finish rendering first")
        store = open_store(dest)
        for path in sets:
            r = push_set(path, store, TransferBar())
            if r.state == "other-render":
                out.print(f"[yellow]kept[/] {r.address}: the store already holds another render of this spec "
                          f"(same spec hash, other bytes); nothing sent. Pull it, or delete it on the store to replace it")
            elif r.state == "already":
                out.print(f"[green]already published[/] {r.address}: nothing transferred")
            else:
                out.print(f"[green]{r.state}[/] {r.address}: {len(r.uploaded)} files sent ({r.bytes_sent / 1e6:.1f} MB), "
                          f"{len(r.kept)} already there")


@shards_app.command("pull")
def shards_pull(
    address: str = typer.Argument(..., help="STORE/TASK/HASH, as `gift shards ls STORE` lists it."),
    dest: Path = typer.Argument(Path("shards-out"), help="Local root; the set goes to DEST/<task>/<hash>/."),
) -> None:
    """Fetch a published set, checking every file's sha256 before it becomes visible; resumable."""
    from shards.pull import parse_address, pull_set
    from shards.store import open_store

    with clean_errors("files already fetched and verified are kept; re-run the same command to resume."):
        url, task, hash16, full = parse_address(address)
        r = pull_set(open_store(url), task, hash16, dest, TransferBar(), full_hash=full)
    out.print(f"[green]pulled[/] {r.set_path}: {len(r.downloaded)} shards fetched ({r.bytes_received / 1e6:.1f} MB), "
              f"{len(r.kept)} already here and verified")


@shards_app.command("info")
def shards_info(set_path: Path = typer.Argument(..., help="A set directory (ROOT/<task>/<hash>).")) -> None:
    """Show a set's spec, versions and per-shard records (a caption set: also its caption bytes and first captions)."""
    from shards.captions import caption_bytes, read_caption_rows
    from shards.manifest import CAPTIONS, load_manifest, set_kind

    with clean_errors("nothing was changed."):
        m = load_manifest(set_path)
        out.print(f"[bold]{m['task']}[/] {m['spec_hash']}  ({'complete' if m['complete'] else 'incomplete'})")
        if set_kind(m["spec"]) == CAPTIONS:
            rows = read_caption_rows(set_path, m)
            out.print(f"caption set: {m['samples']} captions, {caption_bytes(r['caption'] for r in rows)} caption bytes "
                      f"(UTF-8), {m['bytes'] / 1e6:.3f} MB of shards, {len(m['shards'])}/{m['num_shards']} shards")
            captions = Table("key", "class", "source", "caption")
            for r in rows[:8]:
                captions.add_row(r["key"], r["class_name"], str(r["source_index"]), r["caption"])
            out.print(captions)
        else:
            out.print(f"{m['samples']} images ({m['flagged']} flagged), {m['bytes'] / 1e6:.1f} MB, "
                      f"{len(m['shards'])}/{m['num_shards']} shards")
        out.print_json(data={"spec": m["spec"], "versions": m["versions"]})
        table = Table("shard", "samples", "flagged", "MB", "sha256", "device", "dtype", "batch", "speed-ups")
        for s in m["shards"]:
            r = s["render"]
            table.add_row(f"{s['index']:06d}", str(s["samples"]), str(s["flagged"]), f"{s['bytes'] / 1e6:.1f}",
                          s["sha256"][:16], str(r.get("device")), str(r.get("dtype")), str(r.get("batch_size")),
                          ", ".join(r.get("speedups", [])) or "none")
        out.print(table)


@shards_app.command("verify")
def shards_verify(
    set_path: Path = typer.Argument(..., help="A set directory (ROOT/<task>/<hash>)."),
    quick: bool = typer.Option(False, "--quick", help="Checksums only; skip decoding every sample."),
) -> None:
    """Recompute every checksum and read every sample; exit 1 naming each broken shard."""
    from shards.verify import verify_set

    report = verify_set(set_path, deep=not quick)
    if report.ok:
        out.print(f"[green]ok[/] {set_path}: {report.shards_checked} shards, {report.samples} samples verified")
        return
    for problem in report.problems:
        console.print(f"[bold red]broken:[/] {problem}")
    raise typer.Exit(1)


@shards_app.command("preview")
def shards_preview(
    set_path: Path = typer.Argument(..., help="A set directory (ROOT/<task>/<hash>)."),
    out_file: Path = typer.Option(..., "--out", help="PNG file to write."),
    n: int = typer.Option(16, help="Samples to show."),
    columns: int = typer.Option(4, help="Grid columns."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
) -> None:
    """Write a contact sheet of N samples captioned with their prompts."""
    from shards.preview import contact_sheet

    with clean_errors("nothing was changed."):
        if out_file.exists() and not force:
            raise ValueError(f"{out_file} exists; pass --force to overwrite it or choose another --out")
        shown = contact_sheet(set_path, out_file, n=n, columns=columns)
    out.print(f"wrote {out_file} ({shown} samples)")
