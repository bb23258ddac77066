#!/usr/bin/env bash
# Build dist/servermgr.pyz with shiv: one file holding servermgr and its
# dependencies, at the exact versions of zipapp.lock.txt (installed with
# --no-deps: packages servermgr never imports stay out). It contains compiled wheels (msgspec, psutil), so it runs on
# the same CPython minor version and platform as the interpreter that built
# it; pick that interpreter with PYTHON=python3.X (default: python3).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
venv=build/zipapp-venv
if [ ! -x "$venv/bin/python" ]; then
    "$PY" -m venv "$venv"
fi
if ! "$venv/bin/python" -m shiv --version >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install -q 'shiv==1.0.8'
fi
mkdir -p dist
rm -f dist/servermgr.pyz
# --compile-pyc: machines with PYTHONDONTWRITEBYTECODE would recompile every run.
"$venv/bin/python" -m shiv \
    --compile-pyc \
    --reproducible \
    -p "/usr/bin/env python$ver" \
    -c servermgr \
    -o dist/servermgr.pyz \
    --no-deps -r zipapp.lock.txt .
echo "built dist/servermgr.pyz for CPython $ver ($(du -h dist/servermgr.pyz | cut -f1))"
