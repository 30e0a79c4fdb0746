#!/bin/sh
# Run segmentlog's whole test suite on a Debian machine, installing what it needs first:
# the venv module (python3-venv), PostgreSQL 15 (for the Postgres backend's tests), gcc,
# Python's headers and xxhash.h (libxxhash-dev, for the compiled core), and Chromium (the HTTP
# viewer's browser tests drive Debian's build through Playwright; never `playwright install`)
# when they are missing, then the package with its test extras into ./.venv, building
# segmentlog._native.
# Extra arguments go to pytest (e.g. `sh scripts/test.sh -x tests/unit`).
set -eu
cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}
apt_install() {
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt_install python3-venv
fi
if [ -z "${SEGMENTLOG_PG_DSN:-}" ] && [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then
    # The tests start their own throwaway cluster; the package need not create one.
    as_root mkdir -p /etc/postgresql-common
    echo 'create_main_cluster = false' | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
    apt_install postgresql-15
fi
if [ ! -x /usr/bin/chromium ]; then  # tests/http/test_viewer.py fails without it
    apt_install chromium
fi
if ! command -v jq >/dev/null 2>&1; then  # the README's shell example, run as a test, uses jq
    apt_install jq
fi
# The compiled core (segmentlog._native) needs a C compiler, Python's headers and xxhash.h.
if ! command -v gcc >/dev/null 2>&1; then
    apt_install gcc
fi
if ! python3 -c 'import os, sysconfig; os.stat(sysconfig.get_paths()["include"] + "/Python.h")' 2>/dev/null; then
    apt_install python3-dev
fi
if [ ! -f /usr/include/xxhash.h ]; then
    apt_install libxxhash-dev
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# The test install must build the extension: a failed build fails here instead of falling back.
SEGMENTLOG_REQUIRE_NATIVE=1 \
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,postgres,dev]'
exec .venv/bin/python -m pytest "$@"
