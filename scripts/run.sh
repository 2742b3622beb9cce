#!/usr/bin/env bash
# Run the server on its embedded SQLite default (./data/meeting.db) in its own virtual
# environment (.venv). Extra arguments go to meeting-server, e.g. scripts/run.sh --port 9000
# Open the desktop client from another terminal with: .venv/bin/meeting-client
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[client]'
echo "Server starting; open the client from another terminal with: $VENV/bin/meeting-client (the server logs where it listens)" >&2
exec "$VENV/bin/meeting-server" "$@"
