"""The layout a reader walks (README, "What is where"): scripts are imported by nothing but tests,
libraries import only from the layers below them, model.py needs only torch, and every function fits
on a screen and takes at most four parameters that are not keyword-only. Read from the source with
ast; nothing is imported or run."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = {
    "prepare",
    "cluster",
    "train",
    "sample",
    "evaluate",
    "bench",
    "bench_data",
    "bench_runs",
    "roundtrip",
    "app",
}
LAYERS = {
    "files": 1,
    "model": 1,
    "midifile": 2,
    "benchlib": 2,
    "tokenizer": 3,
    "describe": 5,
    "chords": 4,
    "chordwords": 5,
    "words": 6,
    "render": 6,
    "texture": 6,
    "attributes": 7,
    "augment": 8,
    "generation": 8,
    "metrics": 8,
    "dataset": 9,
    "prompt": 9,
    "report": 9,
    "plots": 9,
    "checkpoints": 10,
    "control": 10,
    "runconfig": 11,
}


def sources():
    """Every project .py file outside tests/ and .venv/ -> its parsed tree."""
    return {
        p: ast.parse(p.read_text())
        for p in sorted(ROOT.rglob("*.py"))
        if not {".venv", "tests", "out"} & set(p.relative_to(ROOT).parts)
    }


def imported_modules(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


def test_every_top_level_file_is_a_script_or_a_library():
    top = {p.stem for p in ROOT.glob("*.py")}
    assert top == SCRIPTS | set(LAYERS), f"a file of no kind: {top ^ (SCRIPTS | set(LAYERS))}"
    for name in LAYERS:  # a library has no command line beyond a __main__ demo of a few lines
        tree = ast.parse((ROOT / f"{name}.py").read_text())
        mains = [
            n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)
        ]
        assert all(n.end_lineno - n.lineno < 10 for n in mains), f"{name}.py has a command line"
        assert "argparse" not in set(imported_modules(tree)), (
            f"{name}.py parses arguments: make it a script"
        )


def test_no_script_is_imported_and_libraries_import_only_lower_layers():
    for path, tree in sources().items():
        mods = set(imported_modules(tree))
        assert not mods & (SCRIPTS - {path.stem}), (
            f"{path.relative_to(ROOT)} imports a script: {mods & SCRIPTS}"
        )
        if path.stem in LAYERS and path.parent == ROOT:
            higher = {
                m for m in mods & set(LAYERS) if LAYERS[m] >= LAYERS[path.stem] and m != path.stem
            }
            assert not higher, (
                f"{path.name} (layer {LAYERS[path.stem]}) imports {higher} from its layer or above"
            )
    model_imports = set(imported_modules(ast.parse((ROOT / "model.py").read_text())))
    assert model_imports <= {"torch"} | set(sys.stdlib_module_names), model_imports


def test_functions_fit_on_a_screen_and_take_their_settings_by_keyword():
    for path, tree in sources().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
                assert node.end_lineno - node.lineno + 1 <= 60, f"{where} is over 60 lines"
                positional = [
                    a.arg
                    for a in node.args.posonlyargs + node.args.args
                    if a.arg not in ("self", "cls")
                ]
                assert len(positional) <= 4, (
                    f"{where} takes {len(positional)} positional parameters"
                )
