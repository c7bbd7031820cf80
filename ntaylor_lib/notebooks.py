"""Notebook files: Jupytext MyST Markdown front matter, papermill parameters, glued results.

Shared by the book build (:mod:`ntaylor_lib.site.book`) and parameter sweeps
(:mod:`ntaylor_lib.sweep`). Jupytext, nbformat and PyYAML are imported where used: the
core library runs without them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

#: Kernel options for executing notebooks: only errors that stop the kernel are logged (its
#: notices, such as "Kernel is running over TCP without encryption", are not the reader's business;
#: errors in cells are in the executed notebook).
QUIET_KERNEL = ["--IPKernelApp.log_level=CRITICAL"]


def is_notebook(path: Path) -> bool:
    """A MyST Markdown file is a notebook when its front matter names a kernel."""
    return path.suffix == ".md" and "kernelspec" in front_matter(path)


def front_matter(path: Path) -> dict[str, Any]:
    """The YAML front matter of a MyST Markdown file (empty when it has none)."""
    import yaml

    text = path.read_text()
    if not text.startswith("---"):
        return {}
    head = text[3:].split("\n---", 1)[0]
    return yaml.safe_load(head) or {}


def parse_value(text: str) -> bool | int | float | str:
    """A command-line value as bool (``true``/``false``), int, float, or else str."""
    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_notebook(path: Path) -> Any:
    """The notebook at ``path`` (Jupytext MyST Markdown or ``.ipynb``) as an nbformat node."""
    import jupytext

    return jupytext.read(path)


def parameter_defaults(notebook: Any) -> dict[str, Any]:
    """Names assigned in the notebook's ``parameters`` cell, with their literal defaults (None if not literal)."""
    for cell in notebook.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            out: dict[str, Any] = {}
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign):
                    targets = node.targets
                else:
                    targets = [node.target] if isinstance(node, ast.AnnAssign) else []
                for target in targets:
                    if isinstance(target, ast.Name):
                        try:
                            out[target.id] = ast.literal_eval(node.value) if node.value is not None else None
                        except ValueError:
                            out[target.id] = None
            return out
    return {}


def _parse_glued(text: str) -> Any:
    """A glued value's text/plain back to a Python value: numbers as int/float where possible."""
    text = text.strip()
    numpy_scalar = re.fullmatch(r"np\.\w+\((.*)\)", text)
    if numpy_scalar:
        text = numpy_scalar.group(1)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = text
    if isinstance(value, str):
        parsed = parse_value(value)
        return parsed if isinstance(parsed, (int, float)) and not isinstance(parsed, bool) else value
    return value if isinstance(value, (bool, int, float)) or value is None else text


def glued_values(notebook: Any) -> dict[str, Any]:
    """Every ``myst_nb.glue`` value of an executed notebook (display_data with ``scrapbook`` metadata)."""
    values: dict[str, Any] = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            scrap = output.get("metadata", {}).get("scrapbook", {})
            key = scrap.get("mime_prefix", "") + "text/plain"
            if "name" in scrap and key in output.get("data", {}):
                values[scrap["name"]] = _parse_glued(output["data"][key])
    return values


def first_error(notebook: Any) -> str | None:
    """``"Name: message"`` of the notebook's first error output, or None.

    Papermill does not flag every error: a kernel interrupted by Ctrl-C records a
    ``KeyboardInterrupt`` output yet ends as if it completed.
    """
    for cell in notebook.cells:
        if "raises-exception" in cell.get("metadata", {}).get("tags", []):
            continue  # an error the page means to show
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"
    return None


def unexecuted_cells(notebook: Any) -> int:
    """How many non-empty code cells of an executed notebook never ran (no execution count).

    A kernel stopped by Ctrl-C can leave a notebook that papermill closed as if it had
    completed (an end time, no exception) with its later cells never executed.
    """
    code = [cell for cell in notebook.cells if cell.get("cell_type") == "code" and cell.get("source", "").strip()]
    return sum(1 for cell in code if cell.get("execution_count") is None)
