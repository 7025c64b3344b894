#!/usr/bin/env bash
# Installs the three third-party CircleCI clients, pinned (transitive deps too), into DIR
# (default /tmp/clients): a venv with pycircleci + circleci-env-cli from PyPI, and
# circle-client + circleci-api from npm via the lock file. Needs python3 >= 3.10 and node >= 18.
set -euo pipefail
DIR=${1:-/tmp/clients}
HERE=$(cd "$(dirname "$0")" && pwd)
python3 -m venv "$DIR/venv"
"$DIR/venv/bin/pip" install --quiet --no-deps -r "$HERE/requirements.txt"
"$DIR/venv/bin/pip" check
mkdir -p "$DIR/npm"
cp "$HERE/npm/package.json" "$HERE/npm/package-lock.json" "$DIR/npm/"
(cd "$DIR/npm" && npm ci --no-audit --no-fund)
