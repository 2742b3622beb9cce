#!/usr/bin/env bash
# Install the Real-Time Meeting server as a systemd service (run as root from a checkout):
#
#   sudo scripts/install.sh            # install or upgrade, then start
#   sudo scripts/install.sh --no-start # install only
#
# What it does (docs/OPERATIONS.md explains each step):
#   * creates the system user and group `meeting` (no shell, no home),
#   * installs the package into a virtual environment at /opt/real-time-meeting/venv,
#   * copies the docs to /opt/real-time-meeting/docs,
#   * puts scripts/server.ini.example at /etc/real-time-meeting/server.ini unless one exists,
#   * installs scripts/meeting-server.service into /etc/systemd/system and enables it, and
#     scripts/meeting-server-workers.service beside it (one process per core, for a cluster
#     host; not enabled: see docs/OPERATIONS.md "Running a cluster").
# The SQLite file, the spool and the admin socket live in /var/lib/real-time-meeting, which
# systemd creates (StateDirectory=) owned by `meeting`.
set -euo pipefail

PREFIX=${PREFIX:-/opt/real-time-meeting}
CONF_DIR=${CONF_DIR:-/etc/real-time-meeting}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
PYTHON=${PYTHON:-python3}
SERVICE_USER=meeting
START=1
[ "${1:-}" = "--no-start" ] && START=0

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo $0)" >&2
    exit 1
fi
SRC=$(cd "$(dirname "$0")/.." && pwd)

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "install.sh: Python 3.11 or newer is needed ($PYTHON is $("$PYTHON" -V 2>&1))" >&2
    exit 1
}

if ! getent group "$SERVICE_USER" >/dev/null; then
    groupadd --system "$SERVICE_USER"
fi
if ! getent passwd "$SERVICE_USER" >/dev/null; then
    useradd --system --gid "$SERVICE_USER" --no-create-home --home-dir /var/lib/real-time-meeting \
        --shell /usr/sbin/nologin --comment "Real-Time Meeting server" "$SERVICE_USER"
fi

install -d -m 0755 "$PREFIX"
if [ ! -x "$PREFIX/venv/bin/python" ]; then
    "$PYTHON" -m venv "$PREFIX/venv"
fi
"$PREFIX/venv/bin/python" -m pip install --quiet --upgrade pip
"$PREFIX/venv/bin/python" -m pip install --quiet --upgrade "$SRC"
install -d -m 0755 "$PREFIX/docs"
install -m 0644 "$SRC"/docs/*.md "$PREFIX/docs/"

install -d -m 0750 -o root -g "$SERVICE_USER" "$CONF_DIR"
if [ ! -e "$CONF_DIR/server.ini" ]; then
    install -m 0640 -o root -g "$SERVICE_USER" "$SRC/scripts/server.ini.example" "$CONF_DIR/server.ini"
    echo "install.sh: wrote $CONF_DIR/server.ini (edit host, db and TLS before going public)"
else
    echo "install.sh: kept the existing $CONF_DIR/server.ini"
fi

for unit in meeting-server.service meeting-server-workers.service; do
    install -m 0644 "$SRC/scripts/$unit" "$UNIT_DIR/$unit"
    if command -v systemd-analyze >/dev/null; then
        systemd-analyze verify "$UNIT_DIR/$unit"
    fi
done
systemctl daemon-reload
systemctl enable meeting-server.service
if [ "$START" = 1 ]; then
    systemctl restart meeting-server.service
    systemctl --no-pager status meeting-server.service || true
    echo "install.sh: live figures with: sudo -u $SERVICE_USER $PREFIX/venv/bin/meeting-server status --config $CONF_DIR/server.ini"
fi
