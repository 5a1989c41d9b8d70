"""No module of the package imports from a layer above its own (the layers of the package docstring)."""

import ast
import re
from pathlib import Path

import rewardedit_jax

PACKAGE = Path(rewardedit_jax.__file__).parent


def layers() -> dict[str, int]:
    """{module or package name: layer number} from the package docstring's numbered list."""
    found = {}
    for number, names in re.findall(r"^(\d+)\. [^:]+: (.+)$", rewardedit_jax.__doc__, re.MULTILINE):
        for name in names.split(","):
            found[name.strip()] = int(number)
    return found


def layer_of(module: str, table: dict[str, int]) -> int | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in table:
            return table[".".join(parts[:n])]
    return None


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            found[".".join(parts)] = path
    return found


def imported(path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``path`` imports (at module level or inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            base = node.module
            names |= {f"{base}.{alias.name}" for alias in node.names} | {base}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    inside = {name.removeprefix("rewardedit_jax.") for name in names if name.startswith("rewardedit_jax.")}
    return {name for name in inside if name in known}


def test_the_layer_table_covers_every_module():
    table = layers()
    assert len(set(table.values())) == 4, table
    missing = [m for m in modules() if layer_of(m, table) is None]
    assert not missing, f"modules without a layer in the package docstring: {missing}"


def test_no_module_imports_a_higher_layer():
    table, found = layers(), modules()
    upward = []
    for module, path in found.items():
        mine = layer_of(module, table)
        for target in sorted(imported(path, set(found))):
            theirs = layer_of(target, table)
            if theirs > mine:
                upward.append(f"{module} (layer {mine}) imports {target} (layer {theirs})")
    assert not upward, "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    """The parser finds function-level imports (so the check above can fail)."""
    source = tmp_path / "m.py"
    source.write_text(
        "def f():\n    from rewardedit_jax.training import trainer\n    import rewardedit_jax.io\n"
    )
    assert imported(source, {"training", "training.trainer", "io"}) == {"training", "training.trainer", "io"}
    assert layer_of("training.trainer", layers()) == 3 and layer_of("convert.cli", layers()) == 4
