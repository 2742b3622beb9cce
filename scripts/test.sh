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
"$VENV/bin/python" -m pip install --quiet -e '.[echo]' 2>/dev/null \
    || echo "note: speexdsp did not build (apt-get install swig libspeexdsp-dev); its test is skipped" >&2
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
