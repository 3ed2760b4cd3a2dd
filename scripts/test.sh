#!/usr/bin/env bash
# Runs the whole ledgervault test suite. Installs what the tests need when it
# is missing (Debian packages; needs root for that, as in CI).
set -euo pipefail
cd "$(dirname "$0")/.."

have_postgres() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1; }
find_missing() {
  missing=()
  command -v unshare >/dev/null 2>&1 || missing+=(util-linux)   # full-disk test mounts a private tmpfs
  command -v diff >/dev/null 2>&1 || missing+=(diffutils)       # restored trees are compared with diff -r
  # PostgreSQL tests start their own server (initdb + pg_ctl) and use
  # pg_dump, psql and pgbench.
  have_postgres || missing+=(postgresql postgresql-client)
  # The GnuCash test drives GnuCash itself through its Python bindings
  # (Debian's python3 with python3-gnucash, and the SQLite driver of libdbi).
  { /usr/bin/python3 -c "import gnucash" >/dev/null 2>&1 && compgen -G "/usr/lib/*/dbd/libdbdsqlite3.so" >/dev/null; } ||
    missing+=(gnucash python3-gnucash libdbd-sqlite3)
  # The console's browser test drives Debian's Chromium, headless.
  [ -x /usr/bin/chromium ] || missing+=(chromium)
}
find_missing
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/test.sh: please install: ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  # Install without starting services: the tests start their own server.
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  installed=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" || installed=$?
  if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  if [ "$installed" -ne 0 ]; then
    # A package's configure step can fail in a container without an init
    # system while its programs are in place; only missing programs count.
    find_missing
    if ((${#missing[@]})); then
      echo "scripts/test.sh: apt-get could not install: ${missing[*]}" >&2
      exit 1
    fi
    echo "scripts/test.sh: apt-get reported an error, but every program the tests need is installed" >&2
  fi
fi

# Real accounting applications from PyPI for the per-client tests
# (crates/cli/tests/apps.rs), pinned, in a virtual environment of their own.
venv=target/venv-apps
if ! "$venv/bin/python" -c "import python_accounting, sqlalchemy, psycopg2, trytond, proteus, psycopg" >/dev/null 2>&1; then
  mkdir -p target
  python3 -m venv "$venv"
  # python-accounting declares MySQL drivers that neither SQLite nor
  # PostgreSQL needs (and that do not build without MySQL's headers).
  "$venv/bin/pip" install -q --no-deps python-accounting==2.0.0
  "$venv/bin/pip" install -q SQLAlchemy==2.1.9 python-dateutil==2.9.0.post0 six==1.17.0 \
    typing_extensions==4.16.0 psycopg2-binary==2.9.13
  # Tryton with its accounting and invoicing modules.
  "$venv/bin/pip" install -q trytond==8.2.1 trytond-account==8.2.1 trytond-account-invoice==8.2.0 \
    trytond-company==8.2.0 trytond-party==8.2.0 trytond-currency==8.2.0 \
    trytond-account-payment==8.2.0 proteus==8.2.0 'psycopg[binary,pool]==3.3.9' psycopg-pool==3.3.3
fi

# django-ledger (PyPI), a multi-entity double-entry ledger for Django, in a
# virtual environment of its own (Django 5.2 LTS: Django 6 needs Python 3.12).
djvenv=target/venv-django
if ! "$djvenv/bin/python" -c "import django_ledger, django, treebeard, psycopg2" >/dev/null 2>&1; then
  mkdir -p target
  python3 -m venv "$djvenv"
  "$djvenv/bin/pip" install -q django-ledger==0.8.5 Django==5.2.20 django-treebeard==7.0.3 \
    Faker==40.63.0 fpdf2==2.8.9 Markdown==3.11.4 ofxtools==1.1.1 pillow==13.0.0 asgiref==3.13.0 \
    sqlparse==0.6.1 defusedxml==0.7.1 fonttools==4.69.1 psycopg2-binary==2.9.13
fi

# Real S3 servers for crates/cli/tests/s3.rs: Ceph's RADOS Gateway (Debian
# packages) and Garage (built from crates.io once, ~13 minutes on 2 cores,
# then cached in ~/.cache/ledgervault), started by scripts/s3-servers.sh.
if [ "$(id -u)" -eq 0 ]; then
  bash scripts/s3-servers.sh install
else
  bash scripts/s3-servers.sh install garage
fi
# boto3 plays the bucket's administrator and the attacker in those tests.
s3venv=target/venv-s3
if ! "$s3venv/bin/python" -c "import boto3" >/dev/null 2>&1; then
  mkdir -p target
  python3 -m venv "$s3venv"
  "$s3venv/bin/pip" install -q boto3==1.44.18 botocore==1.44.18 s3transfer==0.19.3
fi

# playwright-core (npm) drives that Chromium in the console's browser test
# (crates/cli/tests/browser/); it downloads no browser of its own.
if [ ! -f target/browser/node_modules/playwright-core/package.json ]; then
  mkdir -p target/browser
  npm install --prefix target/browser --no-audit --no-fund --silent playwright-core@1.64.1
fi

# The test build takes about 2 GB under target/ and the tests about 2 GB more
# while they run; a linker that runs out of disk dies with a bus error, so say
# it first.
mkdir -p target
free_kib=$(df -Pk target | awk 'NR == 2 { print $4 }')
if [ "${free_kib:-0}" -lt $((4 * 1024 * 1024)) ]; then
  echo "scripts/test.sh: warning: only $((${free_kib:-0} / 1024)) MiB free for target/ and the tests' files; they need about 4 GiB" >&2
fi

cargo test --workspace --locked "$@"
