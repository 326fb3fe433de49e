"""docs/architecture.md's layers: a module imports only from its own layer or the layers below it.

Module-level imports only: imports inside ``if TYPE_CHECKING:`` (annotations) and inside functions (the lazy
loading of the built-in part modules, optional heavy dependencies) do not make a layer depend on another.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "unimm"

# top to bottom, as in docs/architecture.md; a module belongs to the first layer with a matching prefix
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("cli", ("unimm.cli", "unimm.cli_help", "unimm.cli_checks", "unimm.__main__", "unimm.data.cli")),
    (
        "orchestration",
        (
            "unimm.train",
            "unimm.demo",
            "unimm.video_demo",
            "unimm.eval",
            "unimm.atlas",
            "unimm.reports",
            "unimm.serve",
            "unimm.chat",
            "unimm.chat_terminal",
            "unimm.document",
            "unimm.tokenizers.train",
        ),
    ),
    ("model", ("unimm.models.unified", "unimm.models.context", "unimm.models.__init__")),
    ("parts", ("unimm.models", "unimm.objectives", "unimm.nn.layers", "unimm.parts")),
    ("config", ("unimm.config", "unimm.settings", "unimm.config_upgrade")),
    ("tasks", ("unimm.tasks",)),
    ("sequence", ("unimm.sequence",)),
    ("samplers", ("unimm.samplers",)),
    (
        "image tokenizers",
        ("unimm.tokenizers.vqvae", "unimm.tokenizers.quantizer", "unimm.tokenizers.fit", "unimm.tokenizers.losses"),
    ),  # fmt: skip
    ("optim", ("unimm.optim",)),
    ("nn", ("unimm.nn",)),
    (
        "data",
        (
            "unimm.data",
            "unimm.tokenizers",
            "unimm.checkpoint",
            "unimm.io",
            "unimm.flops",
            "unimm.provenance",
            "unimm.cpuinfo",
            "unimm.__init__",
        ),
    ),
]


def layer_of(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} belongs to no layer of docs/architecture.md")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts)


def top_level_imports(tree: ast.Module) -> list[str]:
    """Modules imported at module level, outside ``if TYPE_CHECKING:`` blocks."""
    out: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if isinstance(node, (ast.Try, ast.If)) else [node]:
            if isinstance(sub, ast.Import):
                out += [a.name for a in sub.names]
            elif isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
                out.append(sub.module)
    return [m for m in out if m == "unimm" or m.startswith("unimm.")]


def test_every_module_imports_only_its_own_layer_or_below():
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        name = module_name(path)
        here = layer_of(name)
        for imported in top_level_imports(ast.parse(path.read_text())):
            if imported == "unimm":
                continue
            there = layer_of(imported)
            if there < here:
                problems.append(f"{name} ({LAYERS[here][0]}) imports {imported} ({LAYERS[there][0]})")
    assert not problems, "\n".join(problems)


def test_the_check_can_fail():
    """The walker sees a module-level import that points upward (and ignores a TYPE_CHECKING one)."""
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import unimm.cli\nimport unimm.train\n")
    assert top_level_imports(tree) == ["unimm.train"]
    assert layer_of("unimm.train.loop") < layer_of("unimm.nn.backbone")
