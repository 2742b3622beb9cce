#!/usr/bin/env bash
# Run the whole test suite in its own virtual environment (.venv-test), installing what it needs.
# Extra arguments go to pytest, e.g. scripts/test.sh -k chat -x
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-test}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[client,test,loadtest]'
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
