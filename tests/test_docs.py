"""The README stays a page with the two commands, and the docs' --help markers name real parsers.

Fast and offline: nothing is imported from resbench (the parsers are found in the source, by its
syntax tree), and MkDocs need not be installed; `mkdocs build --strict` in .ci/run checks the rest.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250
VENV = "python3 -m venv .venv && . .venv/bin/activate && pip install -e "


def hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fenced_blocks(text: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)]


def extras(command: str) -> set[str]:
    found = re.search(r'pip install (?:-q )?-e "\.\[([\w,-]+)\]"', command)
    assert found, f"no pip install -e .[...] in {command!r}"
    return set(found.group(1).split(","))


def ci_test_command(ci: str) -> str:
    lines = [line for line in ci.splitlines() if line.startswith("pytest ")]
    assert len(lines) == 1, f".ci/run should run one pytest line, found {lines}"
    return lines[0]


def check_readme(readme: str, ci: str) -> None:
    """The README fits on a screen and holds exactly the two copy-paste commands: the sweep's,
    and the tests', which .ci/run runs after installing at least the extras the README installs."""
    n = len(readme.splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; keep it to {README_MAX_LINES}"
    blocks = fenced_blocks(readme)
    assert len(blocks) == 2, f"README.md should hold exactly two code blocks, found {len(blocks)}"
    sweep, tests = blocks
    for command in blocks:
        assert "\n" not in command and command.startswith(VENV), command
    assert sweep.endswith("python -m resbench.sweep --preset quick"), sweep
    run = ci_test_command(ci)
    assert tests.endswith(" && " + run), f"README's test command {tests!r} does not run {run!r}"
    ci_install = next(line for line in ci.splitlines() if "pip install" in line and "-e" in line)
    missing = extras(tests) - extras(ci_install)
    assert not missing, f".ci/run does not install the README's extras {missing}"


def defines_build_parser(module: str) -> bool:
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.is_file():
        return False
    tree = ast.parse(path.read_text(), filename=str(path))
    return any(
        isinstance(node, ast.FunctionDef) and node.name == "build_parser" for node in tree.body
    )


def test_readme_is_short_and_holds_the_ci_commands():
    check_readme((ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r, c: (r + "\n" * 300, c), "lines"),
        (lambda r, c: (r + "\n```bash\nmake\n```\n", c), "exactly two code blocks"),
        (lambda r, c: (r, c.replace("--benchmark-disable", "-x")), "does not run"),
        (lambda r, c: (r, c.replace('".[test,deploy', '".[test')), "extras"),
    ],
)
def test_the_readme_check_fails_when_it_should(edit, message):
    readme, ci = edit((ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text())
    with pytest.raises(AssertionError, match=message):
        check_readme(readme, ci)


def test_every_help_marker_names_a_tool_with_a_parser():
    h = hooks()
    markers = {
        (page.relative_to(ROOT).as_posix(), tool)
        for page in (ROOT / "docs").rglob("*.md")
        for tool in h.MARKER.findall(page.read_text())
    }
    assert markers, "no <!-- help: ... --> marker in docs/"
    unknown = sorted((page, tool) for page, tool in markers if tool not in h.PARSERS)
    assert not unknown, f"markers naming no tool in docs/hooks.py PARSERS: {unknown}"
    assert {tool for _, tool in markers} == set(h.PARSERS), "a tool without its --help page"
    for tool, module in h.PARSERS.items():
        assert defines_build_parser(module), f"{module} (for {tool}) defines no build_parser()"
    assert not defines_build_parser("resbench.no_such_tool")
