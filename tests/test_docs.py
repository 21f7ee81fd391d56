"""The documentation holds: every relative link and #anchor resolves, every project path the docs and the code's
comments cite exists, nothing cites the internal notes outside the repository, and every command of the README's
recipes parses (``gift …`` with the CLI's own click declarations, ``make …`` through ``make -n`` and then the
``gift`` command it expands to, which must use every VAR=value the line sets). Nothing is run; a few seconds."""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "pipeline" / "data" / "README.md",
               *(ROOT / "docs").glob("*.md")])
CODE_DIRS = ("pipeline", "shards", "cli", "tests", "scripts")
# A project path as the docs and comments cite it: one of the top folders, not inside another path or a URL.
PROJECT_PATH = re.compile(r"(?<![\w./~-])(?:docs|pipeline|shards|cli|tests|scripts)/[\w./-]*")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*```")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def prose(text: str) -> str:
    """The markdown without its fenced code blocks (links and headings live outside them)."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            out.append(line)
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (word characters, '-' and spaces kept),
    spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(md: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose(md.read_text()).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")  # GitHub numbers repeated headings -1, -2, ...
    return out


def test_slug_matches_github():
    assert slug("`gift train --method clts` (CLTS stage 2)") == "gift-train---method-clts-clts-stage-2"
    assert slug("Following runs in TensorBoard or W&B") == "following-runs-in-tensorboard-or-wb"
    assert slug("Where outputs go: the shard set") == "where-outputs-go-the-shard-set"


def relative_links() -> list[tuple[Path, str]]:
    return [(md, target) for md in DOCS for target in LINK.findall(prose(md.read_text()))
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]  # http:, https:, mailto: are not checked


@pytest.mark.parametrize("md,target", relative_links(), ids=lambda v: rel(v) if isinstance(v, Path) else v)
def test_relative_link_resolves(md: Path, target: str):
    path, _, anchor = target.partition("#")
    dest = (md.parent / path).resolve() if path else md
    assert dest.exists(), f"{rel(md)} links to {target}: {dest} does not exist"
    if anchor:
        assert dest.suffix == ".md", f"{rel(md)} links to an anchor of a non-markdown file: {target}"
        assert anchor in anchors(dest), f"{rel(md)} links to {target}: no such heading in {rel(dest)}"


def comments_and_docstrings(source: str) -> list[str]:
    """The comments of a Python file and its docstrings (a string that is a whole statement)."""
    out, statement_start = [], True
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out.append(tok.string)
        elif tok.type == tokenize.STRING and statement_start:
            out.append(tok.string)
        if tok.type not in (tokenize.COMMENT, tokenize.NL):
            statement_start = tok.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
    return out


def cited_texts() -> list[tuple[str, str]]:
    """(where, text) for every doc page and every comment or docstring of the code."""
    texts = [(rel(md), md.read_text()) for md in DOCS]
    for folder in CODE_DIRS:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix == ".py":
                texts += [(rel(path), t) for t in comments_and_docstrings(path.read_text())]
            elif path.is_file() and path.suffix in {".sh", ".sbatch"}:
                texts += [(rel(path), line) for line in path.read_text().splitlines() if line.lstrip().startswith("#")]
    texts += [("Makefile", line) for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("#")]
    return texts


def cited_paths() -> list[tuple[str, str]]:
    found = {(where, m.rstrip("./")) for where, text in cited_texts() for m in PROJECT_PATH.findall(text)}
    return sorted(found)


def test_the_path_pattern_finds_citations():
    text = "see docs/protocol.md, `pipeline/data/*.json` and tests/test_docs.py; not demo-out/shards/ or a.b/cli/x"
    assert [m.rstrip("./") for m in PROJECT_PATH.findall(text)] == ["docs/protocol.md", "pipeline/data",
                                                                    "tests/test_docs.py"]
    assert comments_and_docstrings('"""doc cli/a.py"""\nx = "cli/b.py"  # cli/c.py\n') == ['"""doc cli/a.py"""',
                                                                                           "# cli/c.py"]


@pytest.mark.parametrize("where,path", cited_paths(), ids=lambda v: v)
def test_cited_project_path_exists(where: str, path: str):
    assert (ROOT / path).exists(), f"{where} cites {path}, which is not in the repository"


def test_nothing_cites_the_internal_notes():
    """The protocol page is the project's own account; the notes outside the repository are never cited."""
    banned = ("REFERENCE" + ".md", "../" + "shared", "DESIGN" + ".md", "STYLE" + ".md")
    hits = [f"{where}: {b}" for where, text in cited_texts() for b in banned if b in text]
    for folder in CODE_DIRS:  # code too, not only its comments: nothing may read those notes at run time
        for path in (ROOT / folder).rglob("*.py"):
            hits += [f"{rel(path)}: {b}" for b in banned if b in path.read_text()]
    assert not hits, hits


# --- the README's recipes ---------------------------------------------------------------------------------------

def readme_commands() -> list[str]:
    """Every `gift …` / `make …` line of the README's code blocks (continuations joined) and inline code spans."""
    text = (ROOT / "README.md").read_text()
    commands, block = [], None
    for line in text.splitlines():
        if FENCE.match(line):
            block = [] if block is None else None
            continue
        if block is not None:
            if commands and commands[-1].endswith("\\"):
                commands[-1] = commands[-1][:-1] + " " + line.strip()
            elif re.match(r"^(gift|make) ", line):
                commands.append(line.strip())
    commands = [shlex.join(shlex.split(c, comments=True)) for c in commands]
    # inline code that is a whole command (a sub-command and an argument), not a mention like `gift caption`
    spans = [s for s in re.findall(r"`([^`\n]+)`", prose(text)) if re.match(r"^(gift|make) \S+ \S", s)]
    return list(dict.fromkeys(commands + spans))


def parse_gift(args: list[str]) -> None:
    """Parse a `gift` command line with the CLI's own click declarations, running nothing."""
    import typer.main

    import cli.app

    group = typer.main.get_command(cli.app.app)
    ctx = group.context_class(group, info_name="gift")
    cmd, names = group, ["gift"]
    while hasattr(cmd, "get_command"):  # a group: gift shards ls ...
        assert args, f"`{' '.join(names)}` needs a sub-command"
        name, args = args[0], args[1:]
        sub = cmd.get_command(ctx, name)
        assert sub is not None, f"`{' '.join(names)}` has no sub-command {name!r}"
        ctx = cmd.context_class(sub, info_name=name, parent=ctx)
        cmd, names = sub, [*names, name]
    sub_ctx = cmd.make_context(names[-1], list(args), parent=ctx.parent)
    if names[-1] == "table" and sub_ctx.args:  # `gift table` passes the rest to `gift train`'s declarations
        train = group.get_command(ctx, "train")
        train_ctx = train.make_context("train", list(sub_ctx.args), parent=ctx.parent, allow_extra_args=True)
        assert not train_ctx.args, f"`gift table` does not take {train_ctx.args}"


def contains(args: list[str], wanted: list[str]) -> bool:
    """Whether ``wanted`` occurs in ``args`` as consecutive words."""
    return any(args[i:i + len(wanted)] == wanted for i in range(len(args) - len(wanted) + 1))


def check_command(line: str) -> None:
    words = shlex.split(line)
    try:
        if words[0] == "gift":
            parse_gift(words[1:])
            return
        env = {**os.environ, "MAKEFLAGS": "", "MAKELEVEL": ""}
        done = subprocess.run(["make", "-n", "--no-print-directory", *words[1:]], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"`{line}`: make -n failed: {done.stderr.strip()}"
        expanded = [parts[1:] for parts in map(shlex.split, done.stdout.replace("\\\n", " ").splitlines()) if parts and parts[0].endswith("/gift")]
        for args in expanded:
            parse_gift(args)
        for var, _, value in (w.partition("=") for w in words[1:] if "=" in w):
            # a variable the target ignores is a recipe that does not do what it says
            wanted = shlex.split(value)
            assert any(contains(args, wanted) for args in expanded), f"`{line}`: `make {words[1]}` ignores {var}={value}"
    except (Exception, SystemExit) as e:  # click's usage errors: name the line and the message
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        raise AssertionError(f"`{line}` does not parse: {message}") from None


@pytest.mark.parametrize("line", readme_commands())
def test_readme_command_parses(line: str):
    check_command(line)


def test_the_recipes_are_found_and_a_bad_command_fails():
    commands = readme_commands()
    for expected in ("make demo", "make test", "make table ORDER=I DATA=data", "make doctor ORDER=I DATA=data",
                     "make generate ORDER=I", "make train ORDER=seq-cifar100 METHOD=clts DATA=data"):
        assert expected in commands, expected
    with pytest.raises(AssertionError, match="--no-such-option"):
        check_command("gift train --order I --no-such-option")
    with pytest.raises(AssertionError, match="No such option: --bogus-flag"):
        check_command("gift table --order I --data-root data --bogus-flag")  # checked by `gift train`'s options
    with pytest.raises(AssertionError, match="does not take"):
        check_command("gift table --order I --methods gift some-path")
    with pytest.raises(AssertionError, match="ignores ORDER=I"):
        check_command("make tasks ORDER=I")
    with pytest.raises(AssertionError, match="no-such-target|No rule"):
        check_command("make no-such-target")
