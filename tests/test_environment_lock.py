"""The locked environment: requirements.lock is well-formed, holds every direct pin of
requirements.txt, agrees with environment.yml, and is exactly what the running interpreter has
installed; run_all.sh refuses an interpreter the lock is not for.

Each check is a function of the files' text (and of the installed distributions), returning
what differs with the command that fixes it; the tests run each on the real files and on
tampered copies, which must fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
REQUIREMENTS = ROOT / "requirements.txt"
ENVIRONMENT_YML = ROOT / "environment.yml"
PROJECT = "equivlib"  # installed editable by run_all.sh, never in the lock
UNLOCKED_MARKER = ".unlocked-environment"  # written into .venv by run_all.sh (EQUIVLIB_UNLOCKED=1)

REGENERATE = "fix: tools/lock_environment.sh (regenerates requirements.lock; commit it)"
REINSTALL = "fix: rm .venv/.installed-requirements && ./run_all.sh (reinstalls .venv from the lock)"
PIN = re.compile(r"([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==([A-Za-z0-9][A-Za-z0-9.+!_-]*)")
HEADER_KEYS = ("python", "platform", "excluded")


def canonical(name: str) -> str:
    """PEP 503 normalised name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Lock:
    pins: dict[str, str] = field(default_factory=dict)  # canonical name -> version
    header: dict[str, str] = field(default_factory=dict)  # '# key: value' lines
    problems: list[str] = field(default_factory=list)  # what is malformed

    @property
    def excluded(self) -> set[str]:
        return {canonical(n) for n in self.header.get("excluded", "").split()} | {PROJECT}


def parse_lock(text: str) -> Lock:
    """The lock's pins and header, and every way it is not `name==version`, one per line,
    PEP 503 names, no duplicates, sorted, with the header keys."""
    lock = Lock()
    order = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            key = re.fullmatch(r"#\s*(\w+):\s*(.*)", line)
            if key and key[1] in HEADER_KEYS:
                lock.header[key[1]] = key[2].strip()
            continue
        pin = PIN.fullmatch(line)
        if not pin:
            lock.problems.append(f"requirements.lock line {number}: {raw!r} is not name==version; "
                                 + REGENERATE)
            continue
        name, version = canonical(pin[1]), pin[2]
        if pin[1] != name:
            lock.problems.append(f"requirements.lock line {number}: {pin[1]!r} is not the PEP 503 "
                                 f"name {name!r}; " + REGENERATE)
        if name in lock.pins:
            lock.problems.append(f"requirements.lock line {number}: {name} is pinned twice "
                                 f"({lock.pins[name]} and {version}); " + REGENERATE)
            continue
        lock.pins[name] = version
        order.append(name)
    if order != sorted(order):
        first = next(a for a, b in zip(order, sorted(order), strict=True) if a != b)
        lock.problems.append(f"requirements.lock is not sorted by name (first out of place: "
                             f"{first}); " + REGENERATE)
    if not lock.pins:
        lock.problems.append("requirements.lock pins no package; " + REGENERATE)
    for key in HEADER_KEYS:
        if key not in lock.header:
            lock.problems.append(f"requirements.lock's header has no '# {key}: ...' line; "
                                 + REGENERATE)
    for name in sorted(lock.excluded & set(lock.pins)):
        lock.problems.append(f"requirements.lock pins {name}, which its header excludes; "
                             + REGENERATE)
    return lock


def direct_pins(text: str) -> dict[str, str]:
    """requirements.txt's pins (canonical name -> version); a line not name==version fails."""
    pins = {}
    for raw in text.splitlines():
        line = raw.split("#")[0].strip()
        if line:
            pin = PIN.fullmatch(line)
            assert pin, f"requirements.txt: {raw!r} is not pinned exactly (name==version)"
            pins[canonical(pin[1])] = pin[2]
    return pins


def direct_pin_problems(lock: Lock, requirements_text: str) -> list[str]:
    """Every direct pin of requirements.txt must be in the lock at the same version."""
    problems = []
    for name, version in direct_pins(requirements_text).items():
        if name not in lock.pins:
            problems.append(f"requirements.txt pins {name}=={version}, which requirements.lock "
                            f"lacks: the lock is stale; " + REGENERATE)
        elif lock.pins[name] != version:
            problems.append(f"requirements.txt pins {name}=={version} but requirements.lock has "
                            f"{name}=={lock.pins[name]}: the lock is stale; " + REGENERATE)
    return problems


def environment_yml_problems(yml_text: str, lock: Lock) -> list[str]:
    """environment.yml: the lock's Python, and a pip section that is the lock (by reference,
    or the same pins)."""
    env = yaml.safe_load(yml_text) or {}
    deps = env.get("dependencies") or []
    problems = []
    pythons = [d.split("=", 1)[1] for d in deps if isinstance(d, str) and d.startswith("python=")]
    if pythons != [lock.header.get("python")]:
        problems.append(f"environment.yml asks for python={'/'.join(pythons) or '(none)'} but "
                        f"requirements.lock is for {lock.header.get('python')}; fix: set "
                        f"'- python={lock.header.get('python')}' in environment.yml")
    sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    section = [str(s).strip() for s in sections[0]] if len(sections) == 1 else None
    if section is None:
        problems.append("environment.yml has no single '- pip:' section; fix: give it one with "
                        "'- -r requirements.lock'")
    elif section != ["-r requirements.lock"]:
        listed = {}
        for item in section:
            pin = PIN.fullmatch(item)
            if pin:
                listed[canonical(pin[1])] = pin[2]
        if listed != lock.pins or len(listed) != len(section):
            problems.append(f"environment.yml's pip section {section[:3]}... is neither "
                            "'-r requirements.lock' nor the lock's pins; fix: make it "
                            "'- -r requirements.lock'")
    if "pip" not in deps:
        problems.append("environment.yml does not install pip itself; fix: add '- pip'")
    return problems


def installed_problems(lock: Lock, requirements_text: str, installed: dict[str, str],
                       python: str, unlocked: bool) -> list[str]:
    """The installed distributions against the lock, both ways (names and versions), except
    the header's exclusions; in an unlocked .venv (EQUIVLIB_UNLOCKED=1), the direct pins."""
    if unlocked:
        differ = [f"{name}=={version} ("
                  + (f"installed: {installed[name]}" if name in installed else "not installed")
                  + ")"
                  for name, version in direct_pins(requirements_text).items()
                  if installed.get(name) != version]
        if not differ:
            return []
        return ["this .venv is UNLOCKED (installed by EQUIVLIB_UNLOCKED=1 ./run_all.sh, marker "
                f".venv/{UNLOCKED_MARKER}): only the direct pins of requirements.txt are checked, "
                "not requirements.lock; they differ: " + ", ".join(differ) + "; fix: "
                "rm .venv/.installed-requirements && EQUIVLIB_UNLOCKED=1 ./run_all.sh"]
    problems = []
    if python != lock.header.get("python"):
        problems.append(f"this interpreter ({sys.executable}) is Python {python} but "
                        f"requirements.lock is for {lock.header.get('python')}; fix: "
                        f"rm -rf .venv && PYTHON=python{lock.header.get('python')} ./run_all.sh")
    wanted = {n: v for n, v in lock.pins.items() if n not in lock.excluded}
    have = {n: v for n, v in installed.items() if n not in lock.excluded}
    missing = sorted(set(wanted) - set(have))
    extra = sorted(set(have) - set(wanted))
    differ = sorted(n for n in set(wanted) & set(have) if wanted[n] != have[n])
    if missing:
        problems.append("in requirements.lock but not installed: "
                        + ", ".join(f"{n}=={wanted[n]}" for n in missing) + "; " + REINSTALL)
    if extra:
        problems.append("installed but not in requirements.lock: "
                        + ", ".join(f"{n}=={have[n]}" for n in extra) + "; " + REINSTALL
                        + " (or, if the project needs it: add it to requirements.txt, then "
                        "tools/lock_environment.sh)")
    if differ:
        problems.append("installed at another version than requirements.lock: "
                        + ", ".join(f"{n} {have[n]} (lock: {wanted[n]})" for n in differ)
                        + "; " + REINSTALL)
    return problems


def installed_distributions() -> dict[str, str]:
    """Canonical name -> version of every distribution the running interpreter sees (the first
    on sys.path wins, as for imports)."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonical(name), dist.version)
    return found


def _python() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def _unlocked() -> bool:
    return (Path(sys.prefix) / UNLOCKED_MARKER).exists()


def _fail_on(problems: list[str]) -> None:
    """Fail with each difference and its fix on a line of its own (no assertion rewriting)."""
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# ------------------------------------------------------------------ the committed files

def test_lock_is_well_formed():
    lock = parse_lock(LOCK.read_text())
    _fail_on(lock.problems)
    assert lock.header["python"] == "3.11", "run_all.sh and environment.yml assume Python 3.11"
    assert lock.header["platform"] == "Linux x86_64", "run_all.sh assumes Linux x86_64"
    counted = re.search(r"\((\d+) packages\)", LOCK.read_text())
    assert counted and int(counted[1]) == len(lock.pins), \
        f"requirements.lock's header counts {counted and counted[1]} packages, it pins " \
        f"{len(lock.pins)}; " + REGENERATE


def test_readme_states_the_lock_size():
    count = len(parse_lock(LOCK.read_text()).pins)
    said = re.findall(r"all (\d+) packages", (ROOT / "README.md").read_text())
    assert said == [str(count)], (f"README.md says 'all {', '.join(said)} packages', "
                                  f"requirements.lock pins {count}; fix: that number in "
                                  "README.md's set-up paragraph")


@pytest.mark.parametrize("name", sorted(direct_pins(REQUIREMENTS.read_text())))
def test_direct_pin_is_locked_at_its_version(name):
    lock = parse_lock(LOCK.read_text())
    version = direct_pins(REQUIREMENTS.read_text())[name]
    _fail_on(direct_pin_problems(lock, f"{name}=={version}\n"))


def test_environment_yml_agrees_with_the_lock():
    _fail_on(environment_yml_problems(ENVIRONMENT_YML.read_text(), parse_lock(LOCK.read_text())))


def test_installed_environment_is_the_lock():
    """The running interpreter's environment (.venv under ./run_all.sh --test) equals the
    lock; an unlocked .venv (EQUIVLIB_UNLOCKED=1) is checked against the direct pins only."""
    unlocked = _unlocked()
    problems = installed_problems(parse_lock(LOCK.read_text()), REQUIREMENTS.read_text(),
                                  installed_distributions(), _python(), unlocked)
    if unlocked:
        warnings.warn(f"{sys.prefix} is UNLOCKED (EQUIVLIB_UNLOCKED=1): checked against the direct "
                      "pins of requirements.txt only, not requirements.lock", stacklevel=1)
    _fail_on(problems)


# ------------------------------------------------------------------ tampered copies fail

def _swap_first_two_pins(text: str) -> str:
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    lines[first], lines[first + 1] = lines[first + 1], lines[first]
    return "\n".join(lines) + "\n"


def _pin_line(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"{name}=="))


TAMPERED_LOCKS = [
    pytest.param(lambda t: t.replace(_pin_line(t, "numpy"), "numpy>=2"), "not name==version",
                 id="range-not-pin"),
    pytest.param(lambda t: t.replace(_pin_line(t, "torch"), "torch @ file:///tmp/torch.whl"),
                 "not name==version", id="url"),
    pytest.param(lambda t: t.replace(_pin_line(t, "numpy"), "numpy"), "not name==version",
                 id="no-version"),
    pytest.param(lambda t: t.replace(_pin_line(t, "numpy"),
                                     _pin_line(t, "numpy") + "\nnumpy==1.26.4"),
                 "pinned twice", id="duplicate"),
    pytest.param(_swap_first_two_pins, "not sorted", id="unsorted"),
    pytest.param(lambda t: t.replace("\npyyaml==", "\nPyYAML=="), "PEP 503", id="not-normalised"),
    pytest.param(lambda t: re.sub(r"(?m)^# python:.*\n", "", t), "'# python: ...'",
                 id="no-python-header"),
    pytest.param(lambda t: t.replace(_pin_line(t, "pyyaml"), "pip==23.2.1\n"
                                     + _pin_line(t, "pyyaml")), "which its header excludes",
                 id="excluded-pinned"),
]


@pytest.mark.parametrize(("tamper", "expected"), TAMPERED_LOCKS)
def test_tampered_lock_is_malformed(tamper, expected):
    text = LOCK.read_text()
    assert not parse_lock(text).problems
    problems = parse_lock(tamper(text)).problems
    assert any(expected in p and "tools/lock_environment.sh" in p for p in problems), problems


@pytest.mark.parametrize("tamper", [
    pytest.param(lambda t: t.replace(_pin_line(t, "numpy"), "numpy==2.4.5"), id="other-version"),
    pytest.param(lambda t: t.replace(_pin_line(t, "seaborn") + "\n", ""), id="missing"),
])
def test_stale_lock_misses_a_direct_pin(tamper):
    lock = parse_lock(tamper(LOCK.read_text()))
    problems = direct_pin_problems(lock, REQUIREMENTS.read_text())
    assert len(problems) == 1 and "the lock is stale" in problems[0], problems
    assert "tools/lock_environment.sh" in problems[0]


@pytest.mark.parametrize(("tamper", "expected"), [
    pytest.param(lambda t: t.replace("python=3.11", "python=3.12"), "python=3.12",
                 id="other-python"),
    pytest.param(lambda t: t.replace("-r requirements.lock", "-r requirements.txt"),
                 "neither", id="direct-pins-only"),
    pytest.param(lambda t: t.replace("-r requirements.lock", "numpy==2.4.6"), "neither",
                 id="partial-list"),
    pytest.param(lambda t: t.replace("  - pip\n", ""), "pip itself", id="no-pip"),
])
def test_tampered_environment_yml_disagrees(tamper, expected):
    lock = parse_lock(LOCK.read_text())
    text = ENVIRONMENT_YML.read_text()
    assert not environment_yml_problems(text, lock)
    problems = environment_yml_problems(tamper(text), lock)
    assert any(expected in p and "fix:" in p for p in problems), problems


def test_environment_yml_may_list_the_lock_pins_instead():
    lock = parse_lock(LOCK.read_text())
    listed = "\n".join(f"      - {n}=={v}" for n, v in lock.pins.items())
    text = ENVIRONMENT_YML.read_text().replace("      - -r requirements.lock", listed)
    assert not environment_yml_problems(text, lock)
    dropped = text.replace(f"      - {next(iter(lock.pins))}==", "      - x==")
    assert environment_yml_problems(dropped, lock)


def _as_installed(lock: Lock) -> dict[str, str]:
    """A perfect environment for the lock: its pins, pip and the project."""
    return {**lock.pins, "pip": "23.2.1", PROJECT: "0.1.0"}


@pytest.mark.parametrize(("change", "expected"), [
    pytest.param(lambda env: env.pop("seaborn"), "not installed: seaborn==", id="missing"),
    pytest.param(lambda env: env.update({"left-over": "1.0"}), "not in requirements.lock: "
                 "left-over==1.0", id="extra"),
    pytest.param(lambda env: env.update({"numpy": "2.4.5"}), "numpy 2.4.5 (lock: 2.4.6)",
                 id="other-version"),
])
def test_drifted_environment_differs_from_the_lock(change, expected):
    lock = parse_lock(LOCK.read_text())
    env = _as_installed(lock)
    requirements = REQUIREMENTS.read_text()
    assert not installed_problems(lock, requirements, env, "3.11", unlocked=False)
    change(env)
    problems = installed_problems(lock, requirements, env, "3.11", unlocked=False)
    assert len(problems) == 1 and expected in problems[0], problems
    assert REINSTALL in problems[0]


def test_other_python_differs_from_the_lock():
    lock = parse_lock(LOCK.read_text())
    problems = installed_problems(lock, REQUIREMENTS.read_text(), _as_installed(lock), "3.12",
                                  unlocked=False)
    assert problems and "requirements.lock is for 3.11" in problems[0], problems
    assert "PYTHON=python3.11 ./run_all.sh" in problems[0]


def test_unlocked_environment_is_checked_against_the_direct_pins():
    """EQUIVLIB_UNLOCKED=1: Python 3.12, other transitive versions, extras: the direct pins
    decide, and a failure says the environment is unlocked."""
    lock = parse_lock(LOCK.read_text())
    requirements = REQUIREMENTS.read_text()
    env = {**direct_pins(requirements), "left-over": "1.0", "pip": "25.0"}
    assert not installed_problems(lock, requirements, env, "3.12", unlocked=True)
    env["numpy"] = "2.4.5"
    problems = installed_problems(lock, requirements, env, "3.12", unlocked=True)
    assert len(problems) == 1 and "UNLOCKED" in problems[0] and "numpy==2.4.6" in problems[0]
    assert "direct pins of requirements.txt" in problems[0]


# ------------------------------------------------------------------ run_all.sh's set-up refuses

@pytest.fixture
def bare_project(tmp_path: Path) -> Path:
    """run_all.sh with the project's requirement files and no .venv; PYTHON is a fake
    interpreter that only reports a version, so nothing is installed."""
    for name in ("run_all.sh", "requirements.txt", "requirements.lock", "pyproject.toml",
                 "params/cpu.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)
    return tmp_path


def _fake_python(folder: Path, version: str) -> Path:
    fake = folder / f"python{version}"
    fake.write_text(f"#!/bin/sh\necho {version}\n")
    fake.chmod(0o755)
    return fake


def _run_all(project: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "EQUIVLIB_UNLOCKED")}
    return subprocess.run(["bash", str(project / "run_all.sh")], env={**environ, **env},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("version", "unlocked", "expected"), [
    pytest.param("3.12", "", "requirements.lock is for Python 3.11, but '{py}' is Python 3.12: "
                 "run PYTHON=python3.11 ./run_all.sh, or EQUIVLIB_UNLOCKED=1 ./run_all.sh",
                 id="3.12-locked"),
    pytest.param("3.10", "0", "requirements.lock is for Python 3.11, but '{py}' is Python 3.10",
                 id="3.10-locked"),
    pytest.param("3.13", "1", "need Python 3.10-3.12 to create .venv", id="3.13-unlocked"),
    pytest.param("3.11", "yes", "EQUIVLIB_UNLOCKED='yes': set it to 1", id="bad-opt-in"),
])
def test_run_all_refuses_before_any_work(bare_project, version, unlocked, expected):
    py = _fake_python(bare_project, version)
    result = _run_all(bare_project, PYTHON=str(py), EQUIVLIB_UNLOCKED=unlocked)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("run_all.sh: error: "), lines
    assert expected.format(py=py) in lines[0], lines[0]
    assert not (bare_project / ".venv").exists()
    assert result.stdout == ""


def test_run_all_refuses_without_the_lock(bare_project):
    (bare_project / "requirements.lock").unlink()
    result = _run_all(bare_project, PYTHON=str(_fake_python(bare_project, "3.11")))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "run_all.sh: error: requirements.lock is missing: restore it (git checkout "
        "requirements.lock) or regenerate it (tools/lock_environment.sh)")
    assert not (bare_project / ".venv").exists()


def test_run_all_stamp_covers_the_lock():
    """A changed lock reinstalls .venv: the stamp hashes requirements.txt, requirements.lock
    and pyproject.toml (tests/catalogue computes the same stamp)."""
    text = (ROOT / "run_all.sh").read_text()
    assert "want=$(cat requirements.txt requirements.lock pyproject.toml | sha256sum" in text
    assert "pip install --no-deps -r requirements.lock" in text
