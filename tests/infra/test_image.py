"""The container image (infra/Dockerfile): what the package build puts in it, and a Dockerfile
that is multi-stage, installs from the lock, runs as the user the manifests expect and points
the processes at the configuration it copies."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "infra" / "Dockerfile"
SETUP = (sys.executable, "-c", "from setuptools import setup; setup()")


def test_the_package_build_carries_every_file_of_the_package(tmp_path: Path) -> None:
    """The image installs plantcrew with ``pip install .`` (a wheel, not the checkout): a file
    of the package that the build leaves out is missing at run time (the console's page:
    ``plantcrew serve`` then fails at start-up)."""
    src = tmp_path / "src"
    shutil.copytree(
        ROOT / "plantcrew", src / "plantcrew", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path / "build"
    res = subprocess.run(
        [*SETUP, "-q", "build_py", "-d", str(out)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    tracked = subprocess.run(
        ["git", "ls-files", "plantcrew"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    data = [p for p in tracked if not p.endswith(".py")]
    assert "plantcrew/api/console/index.html" in data
    assert [p for p in data if not (out / p).is_file()] == []


def _stages() -> list[str]:
    """The Dockerfile's stages, each as its text from one FROM to the next."""
    text = DOCKERFILE.read_text()
    return re.split(r"(?m)^(?=FROM )", text)[1:]


def test_dockerfile_is_multi_stage_from_the_lock_and_not_root() -> None:
    build, runtime = _stages()
    assert "pip install --require-hashes -r requirements.lock" in build
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    assert "pip " not in runtime and "gcc" not in runtime
    user = re.search(r"(?m)^USER (\d+):(\d+)$", runtime)
    assert user is not None
    uid, gid = int(user[1]), int(user[2])
    assert uid != 0
    # the manifests run the image as that user
    for doc in (ROOT / "infra" / "k8s").glob("*.yaml"):
        for d in yaml.safe_load_all(doc.read_text()):
            if d and d["kind"] == "Deployment":
                ctx = d["spec"]["template"]["spec"]["securityContext"]
                assert (ctx["runAsUser"], ctx["runAsGroup"]) == (uid, gid), doc.name


def test_processes_read_the_config_the_image_copies() -> None:
    """``PLANTCREW_CONFIG_DIR`` (image and ConfigMap) names the folder the image copies
    ``config/`` to, and that folder has every file the processes load from it."""
    runtime = _stages()[-1]
    copied = re.search(r"(?m)^WORKDIR (\S+)$", runtime)
    assert copied is not None
    assert re.search(r"(?m)^COPY (--\S+ )*config \./config$", runtime)
    config_dir = f"{copied[1]}/config"
    assert f"PLANTCREW_CONFIG_DIR={config_dir}" in runtime
    cm = yaml.safe_load((ROOT / "infra" / "k8s" / "configmap.yaml").read_text())
    assert cm["data"]["PLANTCREW_CONFIG_DIR"] == config_dir
    for name in ("crew.yaml", "models.yaml", "policies.yaml", "playbooks.yaml", "signatures.yaml"):
        assert (ROOT / "config" / name).is_file()
