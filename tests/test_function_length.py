"""No function in src/mllmrec over 60 lines (def to last line, docstring included, nested functions too) unless its
docstring says why: a long function is split into named phases, or its docstring holds "Long because ...".

.venv/bin/pytest tests/test_function_length.py -q
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mllmrec"
MAX_LINES = 60
REASON = "Long because"


def long_functions(source: str) -> list[str]:
    """`line: name (N lines)` for each function in `source` over MAX_LINES without REASON in its docstring."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_LINES and REASON not in (ast.get_docstring(node) or ""):
                found.append(f"{node.lineno}: {node.name} ({lines} lines)")
    return found


def test_no_long_function_without_a_reason():
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{f}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for f in long_functions(path.read_text())
    ]
    assert not found, (
        f"functions over {MAX_LINES} lines: split them into named phases, or write why one stays long in its "
        f'docstring ("{REASON} ..."):\n' + "\n".join(found)
    )


def test_only_the_reason_lets_a_long_function_pass():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES - 2))
    assert long_functions(f'def f():\n    """A table."""\n{body}') == []  # exactly MAX_LINES
    longer = body + "    return x0\n"
    assert long_functions(f'def f():\n    """A table."""\n{longer}') == [f"1: f ({MAX_LINES + 1} lines)"]
    assert long_functions(f'def f():\n    """{REASON}: a flat table of cases."""\n{longer}') == []
