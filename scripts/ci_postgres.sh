#!/usr/bin/env bash
# Make the PostgreSQL server binaries available for tests/models/test_postgres.py, which starts
# its own throwaway cluster (initdb + pg_ctl, as the `postgres` OS user when run as root).
# Idempotent: installs Debian's `postgresql` package only when initdb is not found, and stops the
# cluster the package starts by itself (and keeps it from starting again), since the tests do
# not use it. The psycopg driver is the project's `postgres` extra, installed with the venv.
set -euo pipefail

find_initdb() {
    command -v initdb 2>/dev/null && return 0
    local bindir
    while IFS= read -r bindir; do  # the newest version first
        if [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ]; then
            echo "$bindir/initdb"
            return 0
        fi
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
    return 1
}

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi

if ! find_initdb >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq postgresql >/dev/null
fi

# Debian's package creates and starts a cluster (`<version> main` on port 5432): stop it, and set
# it to manual start so a service restart does not bring it back.
for conf in /etc/postgresql/*/main/start.conf; do
    [ -e "$conf" ] || continue
    version="$(basename "$(dirname "$(dirname "$conf")")")"
    $SUDO pg_ctlcluster "$version" main stop >/dev/null 2>&1 || true
    echo manual | $SUDO tee "$conf" >/dev/null
done

"$(find_initdb)" --version
