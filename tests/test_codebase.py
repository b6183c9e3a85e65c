"""The codebase's own shape (docs/design.md): one source of truth per name and list, one reuse rule.

These are the rules a newcomer relies on when finding their room: a public name means one thing,
the devkit's lists are read in one place, every stage output answers the same three-argument
question, every stage result prints itself, and presets say only what differs from their base.
"""

from __future__ import annotations

import ast
import collections
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipeline"


def _modules(skip: tuple[str, ...] = ()) -> list[Path]:
    return sorted(p for p in PIPELINE.rglob("*.py") if not any(part in skip for part in p.relative_to(ROOT).parts))


def test_no_public_name_is_defined_in_two_modules():
    where = collections.defaultdict(list)
    for path in _modules(skip=("cli",)):
        for node in ast.parse(path.read_text()).body:
            defines = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if defines and not node.name.startswith("_"):
                where[node.name].append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}


def _opens_image_sets(tree: ast.AST) -> bool:
    """Whether code builds a path into the devkit's ``ImageSets`` (``p / "ImageSets"``, ``glob("*/ImageSets/*")``)."""
    def named(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and isinstance(node.value, str) and "ImageSets" in node.value

    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and (named(node.left) or named(node.right)):
            return True
        if isinstance(node, ast.Call) and any(named(a) for a in node.args) and (
                getattr(node.func, "attr", getattr(node.func, "id", "")) in ("glob", "rglob", "joinpath", "Path")):
            return True
    return False


def test_devkit_lists_are_read_only_by_the_source_readers():
    """``ImageSets`` lists are opened under pipeline/sources/ only (the shipped builders write them)."""
    readers = [str(p.relative_to(ROOT)) for p in _modules(skip=("sources", "shipped"))
               if _opens_image_sets(ast.parse(p.read_text()))]
    assert readers == []


def test_check_reusable_takes_the_output_its_identity_and_overwrite():
    from pipeline.reuse import check_reusable

    assert list(inspect.signature(check_reusable).parameters) == ["output", "ident", "overwrite"]


def test_every_stage_result_has_a_summary():
    from pipeline import results

    classes = [c for c in vars(results).values()
               if isinstance(c, type) and issubclass(c, results.StageResult) and c is not results.StageResult]
    assert len(classes) >= 9
    assert [c.__name__ for c in classes if c.summary is results.StageResult.summary] == []


def test_paper_presets_say_only_what_differs():
    presets = sorted((PIPELINE / "presets").glob("*.yaml"))
    lines = [len(p.read_text().splitlines()) for p in presets]
    assert sum(lines) / len(lines) <= 8, dict(zip([p.name for p in presets], lines, strict=True))


@pytest.mark.parametrize("limit", [16_000])
def test_pipeline_stays_within_its_line_budget(limit):
    assert sum(len(p.read_text().splitlines()) for p in _modules()) <= limit


def test_docs_name_only_files_that_exist():
    """README.md and docs/ point newcomers at files: every ``pipeline/…``, ``tests/…``, ``benchmarks/…`` path exists."""
    import re

    texts = [ROOT / "README.md", ROOT / "data" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    path = re.compile(r"(?<![\w-])(?:pipeline|tests|benchmarks|flows)/[\w/.-]*\w(?![\w-]*<)")  # not a template
    named = {m for t in texts for m in path.findall(t.read_text())}
    assert sorted(p for p in named if not (ROOT / p).exists() and not any(ROOT.glob(p))) == []
