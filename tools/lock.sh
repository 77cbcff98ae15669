#!/usr/bin/env bash
# Writes requirements.lock (pyproject.toml's dependencies) and requirements-dev.lock (with the
# dev extra) for Python 3.11, each pin with the sha256 of every file PyPI has for that version
# (wheels for every platform and the sdist), so `pip install --require-hashes -r <lock>`
# checks what it downloads on any machine. Pins already in a lock are kept (uv reads the
# existing output as its preferences); extra arguments go to both `uv pip compile` calls, e.g.
#   tools/lock.sh --upgrade-package certifi
# Needs uv (`pip install uv`). Only PyPI is asked: a machine's own indexes, find-links and uv
# settings are ignored, so a local mirror cannot put its files' hashes in the lock.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null; then
  echo "tools/lock.sh: uv not found; install it with 'pip install uv'" >&2
  exit 1
fi

# uv's settings from the environment that would change where it looks or what it may pick
unset UV_INDEX UV_DEFAULT_INDEX UV_INDEX_URL UV_EXTRA_INDEX_URL UV_FIND_LINKS UV_NO_INDEX \
  UV_INDEX_STRATEGY UV_EXCLUDE_NEWER UV_PRERELEASE UV_RESOLUTION UV_CONSTRAINT UV_OVERRIDE

compile() {  # output, then extra uv arguments
  local out=$1; shift
  uv pip compile pyproject.toml "$@" --no-config --python-version 3.11 --generate-hashes \
    --custom-compile-command "tools/lock.sh" --quiet -o "$out"
}

compile requirements.lock "$@"
compile requirements-dev.lock --extra dev "$@"
echo "tools/lock.sh: wrote requirements.lock ($(grep -c '^[a-z0-9]' requirements.lock) pins)" \
  "and requirements-dev.lock ($(grep -c '^[a-z0-9]' requirements-dev.lock) pins)"
