# Sourced by the other scripts: puts us at the repo root with an up-to-date .venv.
# Usage: . scripts/_env.sh run|dev   (run = runtime deps only, dev = tests and linters too)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
_extra=${1:-dev}
_python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$_python" -m venv .venv
fi
_stamp=".venv/.stamp-$_extra-$( (cat pyproject.toml; "$_python" --version) | sha256sum | cut -c1-16)"
if [ ! -f "$_stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    if [ "$_extra" = dev ]; then
        .venv/bin/python -m pip install --quiet -e ".[dev]"
    else
        .venv/bin/python -m pip install --quiet -e .
    fi
    rm -f .venv/.stamp-"$_extra"-*
    touch "$_stamp"
fi
