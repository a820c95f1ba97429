"""The one parser and validator of notebook parameters: a notebook's ``parameters`` cell
(``name: type = default``, the defaults papermill replaces) and ``params/<profile>.yaml``
(sections named after notebooks, keys their parameters, values of the declared types).

``./run_all.sh`` (``tools/run_notebooks.py``), ``python -m equivlib grid`` and the SLURM
scripts (through ``grid``) read parameters here, so they accept and refuse the same files
with the same messages. Every problem is a :class:`ParamsError` whose text says what to fix;
a caller may append what it did not do (``tail``: the driver's ``"; no notebook was run"``).
The comma-separated values inside a parameter (``"z2,p4,p4m"``) are parsed by
:func:`split_list` and :func:`number_list`, alike in every experiment.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

NOTEBOOK_NAME = re.compile(r"^(\d\d)_[a-z0-9_]+\.ipynb$")
DRIVER_PARAMETERS = ("profile", "out_dir")  # set by run_all.sh for every notebook
DEFAULTS_PROFILE = "smoke"  # the committed defaults: its sections may be left out
TYPE_WORDS = {"int": "a whole number", "float": "a number", "str": "text",
              "bool": "true or false"}


class ParamsError(ValueError):
    """A parameters cell or params file that cannot be used: one line saying what to fix."""


# ------------------------------------------------------------------ values inside a parameter
def split_list(text: str, what: str) -> list[str]:
    """The non-empty, stripped entries of ``text``; ValueError when there are none."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ValueError(f"{what} is empty")
    return items


def number_list(text: str, what: str, kind: type) -> list:
    """The entries of ``text`` converted with ``kind`` (``int`` or ``float``)."""
    try:
        return [kind(s) for s in split_list(text, what)]
    except ValueError:
        raise ValueError(f"{what}: expected comma-separated {kind.__name__}s, got {text!r}") \
            from None


# ------------------------------------------------------------------ notebooks
def available_notebooks(notebook_dir: Path) -> dict[str, Path]:
    """The numbered notebooks in ``notebook_dir``: ``"04"`` -> its path, in name order."""
    found = {}
    for path in sorted(notebook_dir.glob("*.ipynb")):
        match = NOTEBOOK_NAME.match(path.name)
        if match:
            found[match.group(1)] = path
    return found


@dataclass(frozen=True)
class Parameter:
    """One line of a notebook's ``parameters`` cell: its name, declared type and default."""

    name: str
    kind: str | None
    default: object


def _parameters_source(notebook: Path) -> str | None:
    """The source of the code cell tagged ``parameters`` (None when there is none)."""
    cells = json.loads(notebook.read_text()).get("cells", [])
    for cell in cells:
        if cell.get("cell_type") == "code" and \
                "parameters" in cell.get("metadata", {}).get("tags", []):
            source = cell.get("source", "")
            return "".join(source) if isinstance(source, list) else source
    return None


def _literal(node: ast.expr | None) -> object:
    """The value of a literal default (None for anything computed)."""
    try:
        return ast.literal_eval(node) if node is not None else None
    except ValueError:
        return None


def notebook_parameters(notebook: Path) -> dict[str, Parameter]:
    """The parameters a notebook declares (``name: type = default`` or ``name = default``);
    empty when it has no ``parameters`` cell."""
    source = _parameters_source(notebook)
    if source is None:
        return {}
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ParamsError(f"{notebook.name}: its parameters cell does not parse ({exc.msg}, "
                          f"line {exc.lineno}); fix the notebook") from None
    found = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            default = _literal(node.value)
            kind = node.annotation.id if isinstance(node.annotation, ast.Name) else None
            found[node.target.id] = Parameter(node.target.id, kind, default)
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            default = _literal(node.value)
            kind = type(default).__name__ if default is not None else None
            found[node.targets[0].id] = Parameter(node.targets[0].id, kind, default)
    return found


def parameter_defaults(notebook: Path) -> dict[str, object]:
    """The defaults of a notebook's ``parameters`` cell (name -> value; None for a computed
    one); ParamsError when the notebook has no such cell."""
    if _parameters_source(notebook) is None:
        raise ParamsError(f"{notebook} has no cell tagged 'parameters'")
    return {name: p.default for name, p in notebook_parameters(notebook).items()}


# ------------------------------------------------------------------ type rules
def _suggest(name: str, valid: list[str]) -> str:
    """"did you mean 'x'?" for the closest valid name, else the list of valid names."""
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"valid are {', '.join(valid) or 'none'}."


def _fits(kind: str | None, value: object) -> bool:
    """Whether a YAML value can stand for a parameter declared as ``kind``."""
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    return True  # a type this check does not know: the notebook decides


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _type_hint(parameter: Parameter, value: object) -> str:
    """What to write instead of ``value`` for ``parameter``."""
    name, kind = parameter.name, parameter.kind
    if kind == "str":
        return f'quote it: {name}: "{value}"'
    numeric = isinstance(value, str) and _looks_numeric(value)
    exponent = re.fullmatch(r"([+-]?\d+)(?:\.(\d*))?[eE]([+-]?)(\d+)", value) \
        if isinstance(value, str) else None
    if kind == "float" and exponent:  # YAML 1.1 floats need a point and a signed exponent
        mantissa, decimals, sign, power = exponent.groups()
        fixed = f"{mantissa}.{decimals or 0}e{sign or '+'}{power}"
        return f"YAML reads {value} as text: write {name}: {fixed}"
    if numeric and (kind == "float" or value.strip().lstrip("+-").isdigit()):
        return f"write it without quotes: {name}: {value.strip()}"
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return f"write {name}: {int(value)}"
    if kind == "bool":
        return f"write {name}: true or {name}: false"
    return f"write {TYPE_WORDS.get(kind, kind)}, like the default {parameter.default!r}"


def _type_problem(section: str, parameter: Parameter, value: object) -> str | None:
    """Why ``value`` cannot be given to ``parameter`` (None when it can)."""
    if value is None and parameter.default is not None:
        return (f"{section}: {parameter.name} has no value; give one like the notebook's "
                f"default {parameter.default!r}, or remove the key to use that default")
    if value is None or _fits(parameter.kind, value):
        return None
    got = f"{type(value).__name__} {value!r}"
    if len(got) > 60:
        got = got[:57] + "..."
    return (f"{section}: {parameter.name} must be {parameter.kind} "
            f"(the notebook's default is {parameter.default!r}), got {got}; "
            f"{_type_hint(parameter, value)}")


# ------------------------------------------------------------------ params files
def available_profiles(params_dir: Path) -> list[str]:
    """The profiles ``params_dir`` holds (``smoke``, ``cpu``, ``paper``: its YAML files)."""
    return sorted(p.stem for p in params_dir.glob("*.yaml"))


def load_profile(params_dir: Path, profile: str, tail: str = "") -> dict:
    """The parsed ``params/<profile>.yaml`` (a mapping of notebook names to parameters);
    ParamsError for an unknown profile, invalid YAML or another top level (``tail`` is
    appended to the last two)."""
    profiles = available_profiles(params_dir)
    if profile not in profiles:
        raise ParamsError(
            f"unknown profile {profile!r}: expected one of {', '.join(profiles)} "
            f"(files in {params_dir})"
        )
    try:
        data = yaml.safe_load((params_dir / f"{profile}.yaml").read_text()) or {}
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ParamsError(f"params/{profile}.yaml is not valid YAML{line} ({problem}); "
                          f"fix the file{tail}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"params/{profile}.yaml must map notebook names to parameters "
                          f"('01_subsampling: {{...}}'){tail}")
    return data


def _section_problems(section: str, values: object, notebook: Path) -> list[str]:
    """What is wrong with one section of a params file (empty when nothing is)."""
    if values is None:
        return []
    if not isinstance(values, dict):
        return [f"section {section!r} must map parameter names to values, "
                f"got {type(values).__name__}; write e.g. '{section}: {{}}'"]
    declared = notebook_parameters(notebook)
    valid = [name for name in declared if name not in DRIVER_PARAMETERS]
    problems = []
    for key, value in values.items():
        if key in DRIVER_PARAMETERS:
            problems.append(f"{section}: {key!r} is set by run_all.sh for every notebook; "
                            f"remove it from the section")
        elif key not in declared:
            problems.append(f"{section}: unknown parameter {key!r}: {_suggest(str(key), valid)}"
                            f" Fix the key (the parameters are the cell tagged 'parameters'"
                            f" of notebooks/{notebook.name})")
        else:
            problem = _type_problem(section, declared[key], value)
            if problem:
                problems.append(problem)
    return problems


def profile_problems(settings: dict, notebooks: dict[str, Path]) -> list[str]:
    """Every problem of a params file: unknown sections, unknown keys, mistyped values."""
    by_name = {path.stem: path for path in notebooks.values()}
    problems = []
    for section, values in settings.items():
        if section not in by_name:
            problems.append(f"unknown section {section!r}: {_suggest(str(section), list(by_name))}"
                            f" Rename or remove it (sections are the notebook names in"
                            f" notebooks/)")
        else:
            problems.extend(_section_problems(section, values, by_name[section]))
    return problems


def check_profile(settings: dict, notebooks: dict[str, Path], params_file: str,
                  tail: str = "") -> None:
    """ParamsError naming the params file's first problem (and how many more there are)."""
    problems = profile_problems(settings, notebooks)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s) in this file)" \
            if len(problems) > 1 else ""
        raise ParamsError(f"{params_file}: {problems[0]}{more}{tail}")


def check_sections(settings: dict, profile: str, names: list[str], tail: str = "") -> None:
    """ParamsError when a profile other than smoke has no section for a notebook it would
    run: its figures replace ``figures/``, so a section deleted by mistake must not silently
    run the notebook at its smoke defaults."""
    if profile == DEFAULTS_PROFILE:
        return
    missing = [name for name in names if name not in settings]
    if missing:
        sections = ", ".join(repr(m) for m in missing)
        raise ParamsError(
            f"params/{profile}.yaml has no section {sections} (a {profile} rebuild replaces "
            f"figures/, so every notebook it runs needs its section): restore it (git diff "
            f"params/{profile}.yaml), or write '{missing[0]}: {{}}' to run the notebook's "
            f"smoke defaults{tail}")
