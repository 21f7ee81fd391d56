"""`gift shards ls | push | pull | info | verify | preview`: inspect, verify and share shard sets (image sets and
caption sets alike)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cli.common import clean_errors, console, out
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


@shards_app.command("ls")
def shards_ls(root: str = typer.Argument("shards-out", help="Root of shard sets, or a store URL (ssh://, https://, ...).")) -> None:
    """List the sets under ROOT, or in a store: task, spec summary, samples, bytes, complete or not."""
    from shards.manifest import find_sets, load_manifest
    from shards.store import is_url

    if is_url(root):
        return _store_ls(str(root))
    with clean_errors():
        table = Table("task", "hash", "generator", "samples", "MB", "complete", "path")
        for path in find_sets(root):
            m = load_manifest(path)
            table.add_row(m["task"], m["spec_hash"][:16], _summary(m["spec"]), f"{m['samples']}/{m['planned_samples']}",
                          f"{m['bytes'] / 1e6:.1f}", "yes" if m["complete"] else "[yellow]no[/]", str(path))
        out.print(table)


def _store_ls(url: str) -> None:
    from shards.store import list_sets, open_store

    with clean_errors():
        store = open_store(url)
        table = Table("task", "hash", "generator", "samples", "MB", "complete", "pull with")
        for s in list_sets(store):
            address = store.address(f"{s.task}/{s.hash16}")
            if s.manifest is None:
                state = f"[red]invalid[/] ({s.problem})" if s.problem else "[yellow]no manifest[/] (push in progress or interrupted)"
                table.add_row(s.task, s.hash16, "", "", "", state, "")
                continue
            m = s.manifest
            table.add_row(m["task"], s.hash16, _summary(m["spec"]), f"{m['samples']}/{m['planned_samples']}",
                          f"{m['bytes'] / 1e6:.1f}", "yes" if m["complete"] else "[yellow]no[/]", address)
        out.print(table)


@shards_app.command("push")
def shards_push(
    set_path: Path = typer.Argument(..., help="A set directory (ROOT/<task>/<hash>), or a root: every set under it."),
    dest: str = typer.Argument(..., help="Store: a directory (shared/NFS mount), ssh://[user@]host[:port]/path, or any fsspec URL."),
) -> None:
    """Publish complete, verified sets to a store: content-addressed, resumable, the manifest written last."""
    from shards.manifest import find_sets, load_manifest
    from shards.push import push_set
    from shards.store import open_store

    with clean_errors():
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

    with clean_errors():
        url, task, hash16, full = parse_address(address)
        r = pull_set(open_store(url), task, hash16, dest, TransferBar(), full_hash=full)
    out.print(f"[green]pulled[/] {r.set_path}: {len(r.downloaded)} shards fetched ({r.bytes_received / 1e6:.1f} MB), "
              f"{len(r.kept)} already here and verified")


@shards_app.command("info")
def shards_info(set_path: Path = typer.Argument(..., help="A set directory (ROOT/<task>/<hash>).")) -> None:
    """Show a set's spec, versions and per-shard records (a caption set: also its caption bytes and first captions)."""
    from shards.captions import caption_bytes, read_caption_rows
    from shards.manifest import CAPTIONS, load_manifest, set_kind

    with clean_errors():
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

    with clean_errors():
        if out_file.exists() and not force:
            raise ValueError(f"{out_file} exists; pass --force to overwrite it or choose another --out")
        shown = contact_sheet(set_path, out_file, n=n, columns=columns)
    out.print(f"wrote {out_file} ({shown} samples)")
