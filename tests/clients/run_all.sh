#!/usr/bin/env bash
# Runs the three client checks against BOSUN_URL/BOSUN_TOKEN/BOSUN_SLUG with the clients that
# install.sh put in DIR (default /tmp/clients). Exit 1 when any check of any client failed.
set -u
DIR=${1:-/tmp/clients}
HERE=$(cd "$(dirname "$0")" && pwd)
status=0
"$DIR/venv/bin/python" "$HERE/check_pycircleci.py" || status=1
NODE_PATH="$DIR/npm/node_modules" node "$HERE/check_circle_client.js" || status=1
CLI="$DIR/venv/bin/circleci-env-cli" bash "$HERE/check_circleci_env_cli.sh" || status=1
exit $status
