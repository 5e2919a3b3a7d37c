"""MkDocs hooks (``hooks:`` in mkdocs.yml); kept out of the site by ``exclude_docs``.

- ``<!-- help: resbench.TOOL -->`` in a page becomes a fenced block of that tool's ``--help``,
  formatted at build time from the parser the tool itself parses with (its ``build_parser()``), so
  the flags on a page cannot drift from the code. A marker naming no tool fails the build.
- The committed results' Markdown, plots and JSON (``results/**``, as git tracks them) are
  published under ``results/`` in the site, so a page can link ``results/quick-cpu-amx/summary.md``
  and a reader of the site can open a run's summary with its plots.

Only the standard library is imported at module level: tests/test_docs.py reads ``PARSERS`` and
``MARKER`` without MkDocs installed.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
from pathlib import Path
from unittest import mock

# each tool's --help marker -> the module whose build_parser() returns its argparse parser
PARSERS = {
    "resbench.sweep": "resbench.sweep.runner",
    "resbench.report": "resbench.report.cli",
    "resbench.profile": "resbench.profile.runner",
    "resbench.data": "resbench.data.cli",
    "resbench.train": "resbench.train.flags",
    "resbench.layerstats": "resbench.layerstats.runner",
}
MARKER = re.compile(r"<!--\s*help:\s*([\w.]+)\s*-->")
HELP_COLUMNS = 100  # argparse wraps to the terminal's width; a fixed one keeps the pages stable
REPO = Path(__file__).resolve().parent.parent
PUBLISHED = (".md", ".png", ".json")  # what of results/ the site carries (not the 4.8 MB plotly.js)


def help_text(tool: str) -> str:
    """``python -m <tool> --help`` as the tool prints it, at HELP_COLUMNS columns."""
    module = importlib.import_module(PARSERS[tool])
    with mock.patch.dict(os.environ, COLUMNS=str(HELP_COLUMNS), NO_COLOR="1"):
        return module.build_parser().format_help()


def on_page_markdown(markdown: str, page, config, files) -> str:
    def block(match: re.Match) -> str:
        tool = match.group(1)
        if tool not in PARSERS:
            from mkdocs.exceptions import PluginError

            raise PluginError(
                f"{page.file.src_uri}: <!-- help: {tool} --> names no tool; "
                f"known: {', '.join(PARSERS)} (docs/hooks.py PARSERS)"
            )
        return f"```text\n{help_text(tool).rstrip()}\n```"

    return MARKER.sub(block, markdown)


def _committed_results() -> list[str]:
    """results/ files as git tracks them (a run being written there is not published), or all of
    them where there is no git."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z", "--", "results"],
            capture_output=True,
            check=True,
        ).stdout.decode()
        paths = [p for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        paths = [p.relative_to(REPO).as_posix() for p in (REPO / "results").rglob("*")]
    return sorted(p for p in paths if p.endswith(PUBLISHED) and (REPO / p).is_file())


def on_files(files, config):
    from mkdocs.structure.files import File

    for path in _committed_results():
        if files.get_file_from_path(path) is None:
            files.append(File(path, str(REPO), config["site_dir"], config["use_directory_urls"]))
    return files
