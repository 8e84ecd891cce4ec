#!/usr/bin/env bash
# Install the pgvector extension ("vector") into the local PostgreSQL 15 cluster.
#
# Debian 12 (bookworm) ships no pgvector package for PostgreSQL 15, so this
# script fetches the Debian source package from trixie, builds it against
# postgresql-server-dev-15 and installs it with `make install`. The trixie
# entry is deb-src only, so apt never installs binary packages from trixie.
#
# Expects: root, Debian 12 with the postgresql-15 package, cluster 15/main on
# 127.0.0.1:5432 with trust authentication for the postgres user.
# Exits 0 at once when the extension is already available.

set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

readonly PG_MAJOR=15
readonly PG_CLUSTER=main
readonly PG_HOST=127.0.0.1
readonly PG_PORT=5432
readonly PG_CONFIG="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config"
readonly SOURCE_SUITE=trixie
readonly SOURCES_FILE="/etc/apt/sources.list.d/engram-${SOURCE_SUITE}-src.sources"
readonly ARCHIVE_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
readonly FALLBACK_MIRROR=http://deb.debian.org/debian
# Wait up to 10 minutes for another apt or dpkg process to release its lock.
readonly APT_OPTIONS=(-y -q -o DPkg::Lock::Timeout=600)

# Temporary build directory, removed on exit.
BUILD_DIR=""

log() {
    printf '[install-pgvector] %s\n' "$*"
}

die() {
    printf '[install-pgvector] ERROR: %s\n' "$*" >&2
    exit 1
}

run_psql() {
    psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -tAc "$1"
}

# Start cluster 15/main unless a server already accepts connections.
ensure_server_running() {
    if pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then
        return
    fi

    log "PostgreSQL is not accepting connections on ${PG_HOST}:${PG_PORT}; starting cluster ${PG_MAJOR}/${PG_CLUSTER}"
    pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" "$PG_CLUSTER" start

    local attempt
    for attempt in $(seq 1 30); do
        if pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then
            return
        fi
        sleep 1
    done
    die "PostgreSQL did not accept connections on ${PG_HOST}:${PG_PORT} within 30 seconds; see /var/log/postgresql/postgresql-${PG_MAJOR}-${PG_CLUSTER}.log"
}

# Print the default version of the vector extension, or nothing when it is not available.
available_vector_version() {
    run_psql "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
}

# Print the URI of the first enabled "deb" entry for the bookworm suite, read
# from the one-line format (sources.list, *.list) and then the deb822 format
# (*.sources). Print nothing when no such entry exists.
find_debian_mirror() {
    local list_files=() deb822_files=() file uri

    [[ -f /etc/apt/sources.list ]] && list_files+=(/etc/apt/sources.list)
    for file in /etc/apt/sources.list.d/*.list; do
        [[ -f $file ]] && list_files+=("$file")
    done
    for file in /etc/apt/sources.list.d/*.sources; do
        [[ -f $file && $file != "$SOURCES_FILE" ]] && deb822_files+=("$file")
    done

    for file in "${list_files[@]}"; do
        # Line form: deb [options] URI SUITE COMPONENT...
        uri=$(awk '
            /^[[:space:]]*#/ { next }
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) {
                    while (i <= NF && $i !~ /\]$/) i++
                    i++
                }
                if ($(i + 1) == "bookworm") { print $i; exit }
            }
        ' "$file")
        if [[ -n $uri ]]; then
            printf '%s\n' "$uri"
            return
        fi
    done

    for file in "${deb822_files[@]}"; do
        # Stanzas are separated by blank lines. Field names are case-insensitive,
        # and an indented line continues the previous field.
        uri=$(awk '
            function check_stanza() {
                if (types ~ /(^| )deb( |$)/ && suites ~ /(^| )bookworm( |$)/ &&
                    enabled != "no" && uris != "") {
                    split(uris, parts, " ")
                    print parts[1]
                    found = 1
                    exit
                }
                types = suites = uris = enabled = key = ""
            }
            /^[[:space:]]*#/ { next }
            /^[[:space:]]*$/ { check_stanza(); next }
            /^[[:space:]]/ {
                value = $0
                gsub(/^[[:space:]]+|[[:space:]]+$/, "", value)
                if (key == "uris") uris = uris " " value
                else if (key == "suites") suites = suites " " value
                else if (key == "types") types = types " " value
                next
            }
            {
                key = tolower(substr($0, 1, index($0, ":") - 1))
                value = substr($0, index($0, ":") + 1)
                gsub(/^[[:space:]]+|[[:space:]]+$/, "", value)
                if (key == "types") types = value
                else if (key == "uris") uris = value
                else if (key == "suites") suites = value
                else if (key == "enabled") enabled = tolower(value)
            }
            END { if (!found) check_stanza() }
        ' "$file")
        if [[ -n $uri ]]; then
            printf '%s\n' "$uri"
            return
        fi
    done
}

write_trixie_source_entry() {
    local mirror
    mirror=$(find_debian_mirror)
    if [[ -z $mirror ]]; then
        mirror=$FALLBACK_MIRROR
        log "No enabled bookworm entry found in the apt sources; using ${mirror}"
    else
        log "Found the Debian mirror of the existing apt sources: ${mirror}"
    fi

    log "Writing ${SOURCES_FILE} (deb-src only, suite ${SOURCE_SUITE})"
    {
        printf 'Types: deb-src\n'
        printf 'URIs: %s\n' "$mirror"
        printf 'Suites: %s\n' "$SOURCE_SUITE"
        printf 'Components: main\n'
        if [[ -f $ARCHIVE_KEYRING ]]; then
            printf 'Signed-By: %s\n' "$ARCHIVE_KEYRING"
        fi
    } >"$SOURCES_FILE"
}

# Install the named packages that are not installed yet. Packages that are
# already installed are left alone, because `apt-get install` would upgrade them.
install_missing_packages() {
    local package missing=()
    for package in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$package")
        fi
    done

    if [[ ${#missing[@]} -eq 0 ]]; then
        log "Build dependencies already installed: $*"
        return
    fi
    log "Installing build dependencies: ${missing[*]}"
    apt-get install "${APT_OPTIONS[@]}" --no-install-recommends "${missing[@]}"
}

build_and_install_pgvector() {
    local source_dir

    BUILD_DIR=$(mktemp -d /tmp/pgvector-build.XXXXXX)
    trap 'rm -rf "$BUILD_DIR"' EXIT
    # apt downloads as the unprivileged _apt user when that user can write here.
    if id _apt >/dev/null 2>&1; then
        chown _apt "$BUILD_DIR"
    fi

    log "Downloading the pgvector source package from ${SOURCE_SUITE} into ${BUILD_DIR}"
    (cd "$BUILD_DIR" && apt-get source -q "pgvector/${SOURCE_SUITE}")

    source_dir=$(find "$BUILD_DIR" -mindepth 1 -maxdepth 1 -type d -name 'pgvector-*' | head -n 1)
    [[ -n $source_dir ]] || die "apt-get source did not unpack a pgvector-* directory in ${BUILD_DIR}"

    # OPTFLAGS= drops the upstream default -march=native so the library runs on
    # any x86-64 CPU. Debian's no-native patch already removes it, and the
    # empty value keeps it off if a later package drops that patch. pgvector
    # 0.7.0 and later pick SIMD distance functions at run time on x86-64 Linux.
    log "Building $(basename "$source_dir") with ${PG_CONFIG}"
    local started=$SECONDS
    make -C "$source_dir" -j "$(nproc)" PG_CONFIG="$PG_CONFIG" OPTFLAGS=
    log "Build finished in $((SECONDS - started)) seconds"

    # NOTE: dpkg does not track these files, so purging postgresql-15 leaves them behind.
    log "Installing into the PostgreSQL ${PG_MAJOR} directories"
    make -C "$source_dir" PG_CONFIG="$PG_CONFIG" OPTFLAGS= install
}

main() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and writes to /etc/apt)"
    [[ -d /usr/lib/postgresql/${PG_MAJOR} ]] ||
        die "PostgreSQL ${PG_MAJOR} is not installed (missing /usr/lib/postgresql/${PG_MAJOR}); install the postgresql-${PG_MAJOR} package first"

    ensure_server_running

    local version
    version=$(available_vector_version)
    if [[ -n $version ]]; then
        log "The vector extension ${version} is already available; nothing to do"
        exit 0
    fi
    log "The vector extension is not available; building it from source"

    write_trixie_source_entry

    log "Running apt-get update"
    apt-get update -q

    install_missing_packages "postgresql-server-dev-${PG_MAJOR}" build-essential dpkg-dev

    build_and_install_pgvector

    version=$(available_vector_version)
    [[ -n $version ]] ||
        die "make install finished, but pg_available_extensions has no 'vector' row; check that ${PG_CONFIG} belongs to the running server"
    log "The vector extension ${version} is now available (run CREATE EXTENSION vector in each database that needs it)"
}

main "$@"
