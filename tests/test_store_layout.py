"""musicrec.store.layout names every store key: keys are valid, hostile ids are made safe, and no other
module of musicrec/, tasks/ or flows/ builds a store key by hand."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from musicrec.store import check_key, layout, safe_key_part

ROOT = Path(__file__).parents[1]
HOSTILE = [
    "../../etc/x",
    "a/b",
    "..",
    ".",
    "",
    ".hidden",
    "x/../../y",
    "C:\\evil",
    "spaced id/é",
    "/abs",
    "a\x00b",
    "~lock",
    ".~tmp",
    "x" * 400,
]
# store keys start with these; a run's workspace folder also has models/<name>/..., named in workspace.py
KEY_HEADS = tuple(
    f"{top}/" for top in (*layout.TOP_FOLDERS, layout.WORKSPACE_MANIFESTS, layout.WORKSPACE_OBJECTS)
)
ALLOWED = {"musicrec/store/layout.py": ("",), "musicrec/pipeline/workspace.py": ("models/",)}


def _keys(value: str) -> list[str]:
    return [
        layout.bundle_prefix(value),
        layout.bundle_file(value, value),
        layout.bundle_metadata(value),
        layout.run_prefix(value),
        layout.run_report(value),
        layout.run_split(value, value),
        layout.run_ranking_split(value, value),
        layout.run_learning_curves(value),
        layout.run_ranking(value),
        layout.tuning_record(value),
        layout.scores_prefix(value, value),
        layout.output_file(layout.scores_prefix(value, value), value),
        layout.output_manifest(layout.scores_prefix(value, value)),
        layout.workspace_manifest(value),
        layout.workspace_object(value),
    ]


def test_fixed_keys_are_the_documented_layout() -> None:
    assert layout.CHAMPION == "models/champion.json"
    assert (
        layout.bundle_metadata("20240101T000000Z-abc-gmf") == "models/20240101T000000Z-abc-gmf/metadata.json"
    )
    assert layout.bundle_file("v1", "model.onnx") == "models/v1/model.onnx"
    assert layout.run_report("r1") == "runs/r1/report.json"
    assert layout.run_split("r1", "train") == "runs/r1/splits/train.parquet"
    assert layout.run_ranking_split("r1", "test") == "runs/r1/ranking_splits/test.parquet"
    assert layout.run_learning_curves("r1") == "runs/r1/learning_curves.png"
    assert layout.run_ranking("r1") == "runs/r1/ranking.json"
    assert layout.tuning_record("gmf") == "tuning/gmf.json"
    assert layout.scores_prefix("r1", "topn") == "scores/r1/topn"
    assert layout.output_manifest("scores/r1/topn") == "scores/r1/topn/_manifest.json"
    assert layout.output_file("", "part-1.parquet") == "part-1.parquet"
    assert layout.workspace_object("ab12") == "objects/ab12"
    for key in [layout.CHAMPION, *_keys("ordinary-id_1")]:
        assert check_key(key) == key


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_ids_become_one_safe_segment(value: str) -> None:
    part = safe_key_part(value)
    for key in _keys(value):
        assert check_key(key) == key
        assert ".." not in key.split("/") and not key.startswith("/")
    assert layout.run_prefix(value) == f"runs/{part}" and layout.bundle_prefix(value) == f"models/{part}"
    assert layout.tuning_record(value) == f"tuning/{part}.json"


def test_listing_helpers_read_back_what_layout_writes() -> None:
    assert layout.is_run_report(layout.run_report("r/1")) and not layout.is_run_report(
        layout.run_split("r", "train")
    )
    keys = [
        layout.bundle_metadata("v1"),
        layout.bundle_file("v1", "model.onnx"),
        layout.bundle_metadata("v/2"),
        layout.CHAMPION,
    ]
    assert layout.bundle_versions(keys) == sorted(["v1", safe_key_part("v/2")])


def _key_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of each string constant or f-string head that starts like a store key (not docstrings)."""
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            head = node.values[0]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            head = node
        else:
            continue
        text = str(head.value)
        if text.startswith(KEY_HEADS) or "champion.json" in text:
            found.append((node.lineno, text))
    return sorted(set(found))  # an f-string head is also walked as a constant of its own


def test_no_module_but_layout_builds_a_store_key() -> None:
    offenders = []
    for folder in ("musicrec", "tasks", "flows"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            allowed = ALLOWED.get(rel, ())
            offenders += [
                f"{rel}:{line}: {text!r}"
                for line, text in _key_literals(ast.parse(path.read_text()))
                if not text.startswith(allowed)
            ]
    assert offenders == [], "build store keys with musicrec.store.layout:\n" + "\n".join(offenders)


def test_the_scan_catches_hand_built_keys() -> None:
    code = (
        'k = f"runs/{run_id}/report.json"\nj = "models/champion.json"\nt = "tuning/" + m\ns = f"scores/{r}"\n'
    )
    assert [line for line, _ in _key_literals(ast.parse(code))] == [1, 2, 3, 4]
    assert _key_literals(ast.parse('"""runs/<id>/report.json is where"""\nmsg = f"no runs/ in {x}"\n')) == []


@pytest.mark.parametrize(
    "first",
    [
        "musicrec.store.base",
        "musicrec.store.local",
        "musicrec.store.s3",
        "musicrec.store.layout",
        "musicrec.store",
    ],
)
def test_each_store_module_imports_first_without_a_cycle(first: str) -> None:
    code = (
        f"import sys\nimport {first}\nfrom musicrec.store import open_store\nopen_store('file:///tmp/x')\n"
        f"assert ('boto3' in sys.modules) == {first.endswith('s3')!r}\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_only_the_s3_module_imports_boto3() -> None:
    importers = [
        p.relative_to(ROOT).as_posix()
        for d in ("musicrec", "tasks", "flows")
        for p in (ROOT / d).rglob("*.py")
        if "import boto3" in p.read_text() or "from boto3" in p.read_text()
    ]
    assert importers == ["musicrec/store/s3.py"]
