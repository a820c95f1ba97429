"""Provenance: every field present and typed; the CPU model, lock hash and git state read
from real files and a real repository; the fallbacks (no /proc/cpuinfo model, no lock, no
git, not a repository, a timeout) give "unknown"/"absent", never an error; and the
comparison names exactly the fields that differ."""

import hashlib
import shutil
import subprocess

import pytest
import torch

from equivlib.store import provenance

FIELDS = {"cpu": str, "machine": str, "platform": str, "python": str, "torch": str,
          "cuda": (str, type(None)), "device": (str, type(None)), "gpu": (str, type(None)),
          "threads": int, "processes": int, "lock": str, "commit": str,
          "dirty": (bool, type(None))}
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t",
                    *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    """A git repository with one commit (a tracked file and a .gitignore)."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    (root / ".gitignore").write_text("ignored/\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "one")
    return root


@pytest.mark.parametrize("field, kind", sorted(FIELDS.items()))
def test_fields_are_present_and_typed(field, kind):
    found = provenance.collect("cpu")
    assert set(found) == set(FIELDS)
    assert isinstance(found[field], kind), (field, found[field])


def test_values_describe_this_process():
    found = provenance.collect("cpu", processes=3, threads=5)
    assert found["torch"] == torch.__version__ and found["cuda"] == torch.version.cuda
    assert (found["device"], found["gpu"], found["processes"], found["threads"]) == \
        ("cpu", None, 3, 5)
    assert provenance.collect()["threads"] == torch.get_num_threads()
    assert provenance.collect()["processes"] == 1 and provenance.collect()["device"] is None


@pytest.mark.parametrize("device", ["cuda", "cuda:1", torch.device("cuda", 0)])
def test_a_cuda_device_names_its_gpu(monkeypatch, device):
    names = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name",
                        lambda d: names.append(torch.device(d)) or "NVIDIA H100 80GB HBM3")
    found = provenance.collect(device, processes=8)
    assert (found["device"], found["gpu"], found["processes"]) == \
        (str(torch.device(device)), "NVIDIA H100 80GB HBM3", 8)
    assert names == [torch.device(device)]


def test_this_checkout_has_a_commit():
    if not (provenance.repo_root() / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    found = provenance.collect()
    assert len(found["commit"]) == 40 and isinstance(found["dirty"], bool)


@pytest.mark.parametrize("text, expected", [
    ("processor\t: 0\nmodel name\t: Intel(R)  Xeon(R) Gold 6348\n", "Intel(R) Xeon(R) Gold 6348"),
    ("processor\t: 0\nmodel name\t: AMD EPYC 9R14 96-Core Processor\nmodel name\t: other\n",
     "AMD EPYC 9R14 96-Core Processor"),
    ("processor\t: 0\nBogoMIPS\t: 50.00\n", "FALLBACK"),  # e.g. an ARM machine
    (None, "FALLBACK"),  # no /proc/cpuinfo (macOS, Windows)
])
@pytest.mark.parametrize("processor, fallback", [("arm", "arm"), ("", "unknown")])
def test_cpu_model(tmp_path, monkeypatch, text, expected, processor, fallback):
    monkeypatch.setattr(provenance.platform, "processor", lambda: processor)
    path = tmp_path / "cpuinfo"
    if text is not None:
        path.write_text(text)
    assert provenance.cpu_model(path) == (fallback if expected == "FALLBACK" else expected)


def test_lock_hash_and_its_absence(tmp_path):
    assert provenance.lock_hash(tmp_path) == "absent"
    (tmp_path / "requirements.lock").write_bytes(b"torch==2.0\n")
    assert provenance.lock_hash(tmp_path) == hashlib.sha256(b"torch==2.0\n").hexdigest()[:16]


@needs_git
def test_git_state_of_a_repository(repo):
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    assert provenance.git_state(repo) == (head, False)
    (repo / "ignored").mkdir()
    (repo / "ignored" / "x").write_text("x")  # ignored: still clean
    assert provenance.git_state(repo) == (head, False)
    (repo / "figures").mkdir()
    (repo / "figures" / "01.csv").write_text("x")  # what a rebuild writes: still clean
    assert provenance.git_state(repo) == (head, False)
    (repo / "new.txt").write_text("n")  # untracked, not ignored: dirty
    assert provenance.git_state(repo) == (head, True)
    (repo / "new.txt").unlink()
    (repo / "a.txt").write_text("changed\n")  # a tracked change: dirty
    assert provenance.git_state(repo) == (head, True)


@needs_git
def test_git_variables_do_not_redirect_it(repo, tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    assert provenance.git_state(repo)[0] != "unknown"


@pytest.mark.parametrize("case", ["not a repository", "a folder inside a repository",
                                  "no git", "git times out", "no commit yet"])
def test_git_fallbacks_are_unknown(tmp_path, monkeypatch, case):
    root = tmp_path / "tree"
    root.mkdir()
    if case == "a folder inside a repository":  # e.g. a venv's site-packages in a checkout
        if shutil.which("git") is None:
            pytest.skip("git not installed")
        _git(tmp_path, "init", "-q")
        (tmp_path / "f").write_text("f")
        _git(tmp_path, "add", "f")
        _git(tmp_path, "commit", "-q", "-m", "one")
    elif case == "no git":
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    elif case == "git times out":
        def hang(*args, **kwargs):
            raise subprocess.TimeoutExpired(args[0], provenance.GIT_TIMEOUT_SECONDS)
        monkeypatch.setattr(provenance.subprocess, "run", hang)
    elif case == "no commit yet":
        if shutil.which("git") is None:
            pytest.skip("git not installed")
        _git(root, "init", "-q")
    assert provenance.git_state(root) == ("unknown", None)


def test_collect_without_git_or_lock(tmp_path):
    found = provenance.collect("cpu", root=tmp_path)  # an installed wheel's folder
    assert (found["commit"], found["dirty"], found["lock"]) == ("unknown", None, "absent")


def test_the_git_and_lock_part_is_computed_once(tmp_path, monkeypatch):
    calls = []
    real = provenance.git_state
    monkeypatch.setattr(provenance, "git_state", lambda root: calls.append(root) or real(root))
    root = tmp_path / "once"
    root.mkdir()
    for _ in range(3):
        provenance.collect(root=root)
    assert len(calls) == 1
    provenance.clear_cache()
    provenance.collect(root=root)
    assert len(calls) == 2


HERE = {"cpu": "Intel Xeon", "machine": "x86_64", "platform": "Linux", "python": "3.11.7",
        "torch": "2.4.0", "cuda": "12.1", "device": "cpu", "gpu": None, "threads": 2,
        "processes": 1, "lock": "0123456789abcdef", "commit": "5e6f7a8" + "0" * 33,
        "dirty": False}


@pytest.mark.parametrize("change, phrase", [
    ({"commit": "1a2b3c4" + "0" * 33}, "at commit 1a2b3c4"),
    ({"dirty": True}, "at commit 5e6f7a8 (dirty)"),
    ({"commit": "unknown", "dirty": None}, "at an unknown commit"),
    ({"cpu": "AMD EPYC 9R14"}, "on AMD EPYC 9R14"),
    ({"gpu": "NVIDIA H100", "device": "cuda:0"}, "on GPU NVIDIA H100"),
    ({"torch": "2.3.0"}, "with torch 2.3.0"),
    ({"cuda": None}, "with a CPU-only torch"),
    ({"lock": "absent"}, "without requirements.lock"),
    ({"lock": "fedcba9876543210"}, "with lock fedcba9876543210"),
    ({"threads": 16, "processes": 4, "device": "cpu", "platform": "other", "python": "3.12"},
     ""),  # these do not change results
])
def test_differences_name_the_fields_that_can_change_results(change, phrase):
    assert provenance.differences({**HERE, **change}, HERE) == phrase


def test_unknown_provenance_differs():
    assert provenance.differences(None, HERE) == "with unknown provenance"
    assert provenance.differing_fields(None, HERE) == list(provenance.RESULT_FIELDS)


def test_made_elsewhere_counts_each_difference():
    other_cpu = {**HERE, "cpu": "AMD EPYC 9R14"}
    old = {**HERE, "commit": "1a2b3c4" + "0" * 33, "dirty": True}
    line = provenance.made_elsewhere([old] * 8 + [other_cpu] * 4 + [HERE] * 3 + [None], HERE)
    assert line == ("reused 13 runs made elsewhere: 8 at commit 1a2b3c4 (dirty); "
                    "4 on AMD EPYC 9R14; 1 with unknown provenance "
                    "(this: commit 5e6f7a8, Intel Xeon)")
    assert provenance.made_elsewhere([HERE, dict(HERE, threads=8)], HERE) is None
    assert provenance.made_elsewhere([], HERE) is None
