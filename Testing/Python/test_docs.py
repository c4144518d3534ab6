"""Every `lascarseg ...` command that the README and the model cards show parses with today's CLI,
so a renamed option or subcommand cannot leave the documentation wrong."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from LAScarSegLib.app.cli import build_parser
from LAScarSegLib.train.train_config import make_config

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "Resources" / "Models").glob("*.md"))]
# a command in a code line or in backticks: "lascarseg" then anything up to a backtick or a comment
COMMAND = re.compile(r"(?:(?:^|[\s`/])lascarseg|-m LAScarSegLib\.app\.cli) ([a-z][^`#\n]*)")


def documented_commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for line in doc.read_text(encoding="utf-8").splitlines():
            for match in COMMAND.finditer(line):
                # shell variables ($K in a job script) get their value only there: a sample value parses
                words = re.sub(r"\$\{?[A-Z_]+\}?", "1", match.group(1).strip())
                if words.split()[0] in {"segment", "batch", "demo", "phantom", "train", "export", "evaluate",
                                        "bench"}:
                    found.append((doc.name, words))
    return found


def test_the_docs_show_commands() -> None:
    # the pattern must keep finding them: every subcommand but demo (shown as `make demo`) appears
    shown = {words.split()[0] for _, words in documented_commands()}
    assert shown >= {"segment", "batch", "phantom", "train", "export", "evaluate", "bench"}, shown


@pytest.mark.parametrize("doc,words", documented_commands(), ids=lambda v: v if len(v) < 60 else v[:57] + "...")
def test_documented_command_parses(doc: str, words: str) -> None:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = build_parser().parse_args(shlex.split(words))
    except SystemExit as exc:
        pytest.fail(f"{doc}: `lascarseg {words}` does not parse (exit {exc.code}): {err.getvalue().strip()}")
    if args.command == "train":  # its KEY=VALUE overrides must name config fields with usable values
        overrides = list(args.overrides) + ([f"variant={args.variant}"] if args.variant else [])
        make_config(args.recipe, None, overrides)
