"""The folders are the layers (ARCHITECTURE.md): no module imports from a layer above its own. Every import statement
in the tree is read from the source (also those inside functions, which a run-time check would miss)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from demo.core.paths import REPO_ROOT

# Rank of each layer; a module may import its own layer and those with a lower rank.
LAYERS = {"demo.core": 0, "demo.distill": 1, "analysis": 2, "demo.app": 3}
COMMANDS = 4  # demo.sample, demo.half, demo.pipeline, demo.space, app.py: may import anything
GRADIO_ALLOWED = ("demo.app.ui", "app")  # the tabs and the entry point; demo.space only reads gradio's version
CLIENT_ALLOWED = (*GRADIO_ALLOWED, "analysis.bench")  # gradio_client: the benchmark drives a served app over HTTP


def layer(module: str) -> int | None:
    """The rank of a first-party module, None for a third-party one."""
    for prefix, rank in sorted(LAYERS.items(), key=lambda kv: -len(kv[0])):
        if module == prefix or module.startswith(prefix + "."):
            return rank
    if module.split(".")[0] in ("demo", "app"):
        return COMMANDS if module not in ("demo",) else 0  # `import demo` alone is the package's docstring
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in the file; `from pkg import name` also yields pkg.name, since a name
    can be a submodule (`from demo.app import lab`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def source_files() -> list[Path]:
    return sorted(
        p for p in [*REPO_ROOT.glob("demo/**/*.py"), *REPO_ROOT.glob("analysis/**/*.py"), REPO_ROOT / "app.py"] if p.is_file()
    )


def violations() -> list[str]:
    bad = []
    for path in source_files():
        name = module_name(path)
        own = layer(name)
        for line, target in imports(path):
            top = target.split(".")[0]
            allowed = {"gradio": GRADIO_ALLOWED, "gradio_client": CLIENT_ALLOWED}.get(top)
            if allowed and not name.startswith(allowed):
                bad.append(f"{name}:{line} imports {target} (only {', '.join(allowed)} may)")
            rank = layer(target)
            if rank is not None and own is not None and rank > own:
                bad.append(f"{name}:{line} imports {target}, a higher layer")
    return bad


def test_no_module_imports_a_higher_layer():
    assert violations() == []


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The check itself can fail: a core module importing the app, or gradio, is reported with its line."""
    fake_root = tmp_path
    (fake_root / "demo" / "core").mkdir(parents=True)
    (fake_root / "demo" / "core" / "bad.py").write_text(
        "import os\n\ndef f():\n    from demo.app import lab\n    import gradio\n"
    )
    monkeypatch.setattr(__import__(__name__), "REPO_ROOT", fake_root)
    assert violations() == [
        "demo.core.bad:4 imports demo.app, a higher layer",
        "demo.core.bad:4 imports demo.app.lab, a higher layer",
        "demo.core.bad:5 imports gradio (only demo.app.ui, app may)",
    ]


@pytest.mark.parametrize(
    ("module", "rank"),
    [
        ("demo.core.models", 0),
        ("demo.distill.hd", 1),
        ("analysis.metrics", 2),
        ("demo.app.ui.compare", 3),
        ("demo.sample", 4),
        ("app", 4),
        ("torch", None),
    ],
)
def test_layers_of_known_modules(module, rank):
    assert layer(module) == rank


def test_the_repository_root_is_defined_once_and_right():
    assert (REPO_ROOT / "app.py").is_file() and (REPO_ROOT / "demo" / "core" / "paths.py").is_file()
