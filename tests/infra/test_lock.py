"""The dependency locks (requirements.lock, requirements-dev.lock) and the commands that
install them: every pin carries the sha256 of its files, so pip installs them in hash-checking
mode, and that mode refuses, in the same pip call, a requirement with no file to hash (the
checkout, ``.`` or ``-e .``), so each command installs the lock alone and then plantcrew with
``--no-deps``."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ("requirements.lock", "requirements-dev.lock")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}$")


def read_lock(name: str) -> dict[str, tuple[str, list[str]]]:
    """The lock ROOT/``name`` as {canonical name: (version, [--hash options])}; raises
    AssertionError naming the line for a requirement that is not ``name==version``."""
    entries: dict[str, tuple[str, list[str]]] = {}
    current = ""
    for n, raw in enumerate((ROOT / name).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip().rstrip("\\").strip()
        if not line:
            continue
        if raw[0].isspace():
            assert current and HASH.match(line), f"{name}:{n}: not a --hash option: {raw!r}"
            entries[current][1].append(line)
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)", line)
        assert m, f"{name}:{n}: not pinned as name==version: {raw!r}"
        current = canonicalize_name(m[1])
        entries[current] = (m[2], [])
    return entries


@pytest.mark.parametrize("lock", LOCKS)
def test_every_pin_of_the_lock_carries_hashes(lock: str) -> None:
    entries = read_lock(lock)
    assert len(entries) > 50
    assert [name for name, (_, hashes) in entries.items() if not hashes] == []


def test_the_locks_satisfy_pyproject_and_agree() -> None:
    """Each dependency of pyproject.toml (the dev extra's for the dev lock) is locked at a
    version it accepts, and both locks pin a package they share at the same version, so the
    tests run what the main command and the image install."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    main, dev = read_lock("requirements.lock"), read_lock("requirements-dev.lock")
    wanted = [
        ("requirements.lock", main, project["dependencies"]),
        (
            "requirements-dev.lock",
            dev,
            project["dependencies"] + project["optional-dependencies"]["dev"],
        ),
    ]
    for lock, entries, deps in wanted:
        for dep in map(Requirement, deps):
            name = canonicalize_name(dep.name)
            assert name in entries, f"{lock} lacks {dep}"
            assert dep.specifier.contains(entries[name][0], prereleases=True), (
                f"{lock} pins {name}=={entries[name][0]}, pyproject.toml wants {dep}"
            )
    assert {n: v for n, (v, _) in main.items() if dev[n][0] != v} == {}
    # the releases of litellm that were published by someone else (March 2026)
    assert main["litellm"][0] not in {"1.82.7", "1.82.8"}


def segments(command: str) -> list[list[str]]:
    """The simple commands of a shell command line joined by ``&&``, each as its words."""
    parts: list[list[str]] = [[]]
    for word in shlex.split(command):
        if word == "&&":
            parts.append([])
        else:
            parts[-1].append(word)
    return parts


def pip_installs(command: str) -> list[list[str]]:
    """The ``pip install`` calls of a shell command line joined by ``&&``, each as its
    arguments after ``install``."""
    return [seg[2:] for seg in segments(command) if seg[:2] == ["pip", "install"]]


def check_installs(where: str, command: str) -> int:
    """Assert that each ``pip install`` of ``command`` that names a lock requires hashes and
    installs nothing else, and that one that installs the checkout adds no dependency; return
    how many installed a lock."""
    locks = 0
    for args in pip_installs(command):
        files, others = [], []
        words = iter(args)
        for word in words:
            if word in ("-r", "--requirement"):
                files.append(next(words))
            elif word in ("-e", "--editable"):
                others.append(next(words))
            elif not word.startswith("-"):
                others.append(word)
        if any(f in LOCKS for f in files):
            locks += 1
            assert "--require-hashes" in args, f"{where}: pip install {shlex.join(args)}"
            assert others == [], (
                f"{where}: {others} cannot be hashed: pip install {shlex.join(args)}"
            )
        elif others:
            assert "--no-deps" in args, f"{where}: pip install {shlex.join(args)} resolves again"
    return locks


def readme_commands() -> tuple[str, str]:
    """The README's main command and its test command (the set-up lines, in that order)."""
    lines = [
        line
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith("python3 -m venv .venv && ")
    ]
    main = [line for line in lines if "plantcrew run " in line]
    tests = [line for line in lines if line.endswith("&& pytest -q")]
    assert len(main) == 1 and len(tests) == 1, lines
    return main[0], tests[0]


def test_the_readme_commands_install_the_hashed_lock_then_plantcrew() -> None:
    main, tests = readme_commands()
    assert check_installs("README main command", main) == 1
    assert check_installs("README test command", tests) == 1
    assert "requirements.lock" in main and "requirements-dev.lock" in tests


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run's line after 'The README's test command:' is the README's, past creating and
    activating the venv, with pip's -q."""
    text = (ROOT / ".ci" / "run").read_text()
    ci = text.split("# The README's test command:\n", 1)[1].splitlines()[0]
    readme = readme_commands()[1].split(" && ", 2)[2]
    quiet = [
        [w for w in seg if w != "-q"] if seg[:2] == ["pip", "install"] else seg
        for seg in segments(ci)
    ]
    assert quiet == segments(readme)
    assert check_installs(".ci/run", ci) == 1


def test_the_image_installs_the_hashed_lock_then_plantcrew() -> None:
    text = re.sub(r"\\\n", " ", (ROOT / "infra" / "Dockerfile").read_text())
    runs = re.findall(r"(?m)^RUN (.*)$", text)
    assert sum(check_installs(f"infra/Dockerfile: RUN {run}", run) for run in runs) == 1
    assert any("pip install --no-deps ." in run for run in runs)
