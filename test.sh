#!/usr/bin/env bash
# The test command: installs what the tests need when it is missing (idempotent), then runs every test
# in cluster.sln and ends with one line "N passed, N failed".
#
#   ./test.sh                 # everything
#   ./test.sh --filter X      # extra arguments go to `dotnet test`
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages the real-service tests start (see ../shared/REAL-STACK.md).
# postgresql-15: the runtime tests start private PostgreSQL servers (initdb + pg_ctl, tests/Drydock.TestKit/Postgres).
# libvirt-daemon-system, libvirt-clients: the libvirt driver's tests start libvirtd (tests/Drydock.TestKit/Libvirt).
DEBIAN_PACKAGES=(qemu-utils qemu-system-x86 nbdkit libnbd-bin zstd postgresql-15 libvirt-daemon-system libvirt-clients)

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    echo "test.sh: installing ${missing[*]}" >&2
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Azurite (the Azure Storage emulator) from npm, for the Azure Blob backend's tests. The fixture in
# tests/Drydock.TestKit/Azurite finds it here; DRYDOCK_AZURITE (path to azurite-blob) overrides.
AZURITE_PREFIX="${DRYDOCK_AZURITE_PREFIX:-${HOME:-/root}/.cache/drydock/azurite}"
export DRYDOCK_AZURITE_PREFIX="$AZURITE_PREFIX"
if [ -z "${DRYDOCK_AZURITE:-}" ] && [ ! -x "$AZURITE_PREFIX/node_modules/.bin/azurite-blob" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "test.sh: installing npm (for Azurite)" >&2
        SUDO=""
        if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    fi
    echo "test.sh: installing Azurite into $AZURITE_PREFIX" >&2
    mkdir -p "$AZURITE_PREFIX"
    npm install --no-audit --no-fund --silent --prefix "$AZURITE_PREFIX" azurite@3 >/dev/null
fi

RESULTS="${DRYDOCK_TEST_RESULTS:-$PWD/artifacts/test-results}"
rm -rf "$RESULTS"
mkdir -p "$RESULTS"

status=0
dotnet test cluster.sln -c Release \
    --logger "trx;LogFilePrefix=results" \
    --results-directory "$RESULTS" \
    --blame-hang-timeout 10m \
    "$@" || status=$?

passed=0
failed=0
shopt -s nullglob
for trx in "$RESULTS"/*.trx; do
    counters=$(grep -o '<Counters [^>]*>' "$trx" | head -n 1 || true)
    p=$(sed -n 's/.* passed="\([0-9]*\)".*/\1/p' <<<"$counters")
    f=$(sed -n 's/.* failed="\([0-9]*\)".*/\1/p' <<<"$counters")
    e=$(sed -n 's/.* error="\([0-9]*\)".*/\1/p' <<<"$counters")
    t=$(sed -n 's/.* timeout="\([0-9]*\)".*/\1/p' <<<"$counters")
    a=$(sed -n 's/.* aborted="\([0-9]*\)".*/\1/p' <<<"$counters")
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0} + ${e:-0} + ${t:-0} + ${a:-0}))
done
if [ "$status" != 0 ] && [ "$failed" = 0 ]; then
    # The build or a test host failed before any test could report: count it as a failure.
    failed=1
fi
echo "${passed} passed, ${failed} failed"
exit "$status"
