#!/usr/bin/env bash
# Makes sure the binaries of the services the tests start privately
# (osago-testkit) are installed; quiet and quick when they are:
#
# - PostgreSQL server: initdb, pg_ctl, postgres, psql (Debian: postgresql),
#   or $OSAGO_PG_BIN; as root, also the `postgres` user to run it as;
# - Valkey or Redis: valkey-server or redis-server (Debian: redis-server),
#   or $OSAGO_VALKEY_BIN;
# - stunnel (Debian: stunnel4), the TLS terminator of the TLS tests;
# - Chromium (Debian: chromium), the headless browser of the page test, or
#   $OSAGO_CHROMIUM_BIN; and its WebDriver (Debian: chromium-driver), which
#   drives the buyer's flow in tests/browser.rs, or $OSAGO_CHROMEDRIVER_BIN;
# - yamllint, promtool (Debian: prometheus) and kubectl (Debian:
#   kubernetes-client), the deploy bundle's checks;
# - OpenSSL headers (Debian: libssl-dev, pkg-config): librdkafka is built
#   with TLS and SASL;
# - tansu 0.6.0 (Kafka protocol) with in-memory and SQLite storage, built
#   from crates.io into $HOME/.cache/osago/tansu-0.6.0-libsql, or
#   $OSAGO_TANSU_BIN;
# - cargo-deny 0.20.2 (the licence, ban and source check), built from
#   crates.io into $HOME/.cache/osago/cargo-deny-0.20.2 (~4 min, once), or
#   $OSAGO_CARGO_DENY_BIN.
#
# With --bench, also nginx with the nchan module (Debian: nginx-light or
# nginx, and libnginx-mod-nchan), the SSE comparison of
# `scripts/bench-load.sh sse`.
#
# With --packages, only the Debian packages and the postgres user (steps 1
# and 2); with --tools, only the two pinned tools built from crates.io
# (steps 3 and 4). scripts/test-all.sh runs the two apart so that the tools'
# long first build overlaps the workspace's.
#
# Missing Debian packages are installed with apt-get when running as root;
# otherwise the script names what to install and exits 1. Idempotent.
set -euo pipefail

TANSU_VERSION=0.6.0
TANSU_ROOT="${HOME}/.cache/osago/tansu-${TANSU_VERSION}-libsql"
CARGO_DENY_VERSION=0.20.2
CARGO_DENY_ROOT="${HOME}/.cache/osago/cargo-deny-${CARGO_DENY_VERSION}"

say() { echo "install-test-services: $*" >&2; }

have_pg_in() {
    [ -x "$1/initdb" ] && [ -x "$1/pg_ctl" ] && [ -x "$1/postgres" ]
}

have_postgres() {
    if [ -n "${OSAGO_PG_BIN:-}" ]; then
        have_pg_in "$OSAGO_PG_BIN"
        return
    fi
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        if have_pg_in "$dir"; then
            return 0
        fi
    done
    command -v initdb >/dev/null && command -v pg_ctl >/dev/null && command -v postgres >/dev/null
}

have_psql() {
    if [ -n "${OSAGO_PG_BIN:-}" ] && [ -x "$OSAGO_PG_BIN/psql" ]; then
        return 0
    fi
    compgen -G '/usr/lib/postgresql/*/bin/psql' >/dev/null || command -v psql >/dev/null
}

have_valkey() {
    if [ -n "${OSAGO_VALKEY_BIN:-}" ]; then
        [ -x "$OSAGO_VALKEY_BIN" ]
        return
    fi
    command -v valkey-server >/dev/null || command -v redis-server >/dev/null
}

is_root() { [ "$(id -u)" = 0 ]; }

have_chromium() {
    if [ -n "${OSAGO_CHROMIUM_BIN:-}" ]; then
        [ -x "$OSAGO_CHROMIUM_BIN" ]
        return
    fi
    command -v chromium >/dev/null || command -v chromium-browser >/dev/null
}

have_chromedriver() {
    if [ -n "${OSAGO_CHROMEDRIVER_BIN:-}" ]; then
        [ -x "$OSAGO_CHROMEDRIVER_BIN" ]
        return
    fi
    command -v chromedriver >/dev/null
}

bench=false
packages=true
tools=true
for arg in "$@"; do
    case "$arg" in
        --bench) bench=true ;;
        --packages) tools=false ;;
        --tools) packages=false ;;
        *)
            say "unknown option $arg (options: --bench, --packages, --tools)"
            exit 2
            ;;
    esac
done

have_nchan() {
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || return 1
    [ -f /usr/lib/nginx/modules/ngx_nchan_module.so ]
}

# Steps 1 and 2.
install_packages() {
    # 1. Debian packages.
    missing=()
    if $bench && ! have_nchan; then
        missing+=(nginx-light libnginx-mod-nchan)
    fi
    if ! have_postgres || ! have_psql; then
        missing+=(postgresql)
    fi
    if ! have_valkey; then
        missing+=(redis-server)
    fi
    # The TLS tests put stunnel in front of the broker and an insurer.
    if ! command -v stunnel4 >/dev/null && ! command -v stunnel >/dev/null; then
        missing+=(stunnel4)
    fi
    # librdkafka is built with OpenSSL (TLS and SASL/SCRAM to managed Kafka).
    if ! pkg-config --exists openssl 2>/dev/null; then
        missing+=(libssl-dev pkg-config)
    fi
    # The page is tested in headless Chromium (its CSP, no console errors).
    if ! have_chromium; then
        missing+=(chromium)
    fi
    if ! have_chromedriver; then
        missing+=(chromium-driver)
    fi
    # The deploy bundle's checks (scripts/check-deploy.sh).
    command -v yamllint >/dev/null || missing+=(yamllint)
    command -v promtool >/dev/null || missing+=(prometheus)
    command -v kubectl >/dev/null || missing+=(kubernetes-client)
    if [ "${#missing[@]}" -gt 0 ]; then
        if is_root && command -v apt-get >/dev/null; then
            say "installing ${missing[*]} with apt-get"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            # Packages must not start services (nginx would take port 80).
            if [ ! -e /usr/sbin/policy-rc.d ]; then
                printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
                chmod +x /usr/sbin/policy-rc.d
                trap 'rm -f /usr/sbin/policy-rc.d' EXIT
            fi
            apt-get install -y -qq "${missing[@]}" >/dev/null
        else
            say "missing ${missing[*]}: install them (Debian/Ubuntu: sudo apt-get install -y ${missing[*]}), or point OSAGO_PG_BIN / OSAGO_VALKEY_BIN at the binaries"
            exit 1
        fi
        if ! have_postgres || ! have_psql || ! have_valkey || { $bench && ! have_nchan; } \
            || ! { command -v stunnel4 >/dev/null || command -v stunnel >/dev/null; } \
            || ! pkg-config --exists openssl 2>/dev/null || ! have_chromium || ! have_chromedriver \
            || ! command -v yamllint >/dev/null || ! command -v promtool >/dev/null \
            || ! command -v kubectl >/dev/null; then
            say "${missing[*]} installed but the binaries are still not found"
            exit 1
        fi
    fi

    # 2. PostgreSQL refuses to run as root: the testkit runs it as `postgres`.
    if is_root && ! id -u postgres >/dev/null 2>&1; then
        if command -v useradd >/dev/null; then
            say "creating the postgres system user"
            useradd --system --user-group --no-create-home --shell /usr/sbin/nologin postgres
        else
            say "running as root without a postgres user: create one (useradd --system postgres)"
            exit 1
        fi
    fi
}

# Steps 3 and 4.
build_tools() {
    # 3. tansu, pinned, built once into the cache.
    if [ -n "${OSAGO_TANSU_BIN:-}" ]; then
        if [ ! -x "$OSAGO_TANSU_BIN" ]; then
            say "OSAGO_TANSU_BIN=$OSAGO_TANSU_BIN is not an executable: unset it to build tansu ${TANSU_VERSION} into ${TANSU_ROOT}"
            exit 1
        fi
    elif [ ! -x "${TANSU_ROOT}/bin/tansu" ]; then
        if ! command -v cargo >/dev/null; then
            say "tansu ${TANSU_VERSION} is missing and so is cargo: install the Rust toolchain (https://rustup.rs)"
            exit 1
        fi
        say "building tansu ${TANSU_VERSION} into ${TANSU_ROOT} (cargo install, takes ~15 min, once)"
        cargo install --locked tansu --version "${TANSU_VERSION}" --features dynostore,libsql --root "${TANSU_ROOT}"
    fi

    # 4. cargo-deny, pinned, built once into the cache.
    if [ -n "${OSAGO_CARGO_DENY_BIN:-}" ]; then
        if [ ! -x "$OSAGO_CARGO_DENY_BIN" ]; then
            say "OSAGO_CARGO_DENY_BIN=$OSAGO_CARGO_DENY_BIN is not an executable"
            exit 1
        fi
    elif [ ! -x "${CARGO_DENY_ROOT}/bin/cargo-deny" ]; then
        say "building cargo-deny ${CARGO_DENY_VERSION} into ${CARGO_DENY_ROOT} (cargo install, ~4 min, once)"
        cargo install --locked cargo-deny --version "${CARGO_DENY_VERSION}" --root "${CARGO_DENY_ROOT}"
    fi
}

if $packages; then
    install_packages
fi
if $tools; then
    build_tools
fi
