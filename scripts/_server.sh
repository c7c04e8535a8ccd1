# Sourced by scripts/test: makes sure the servers the tests start themselves
# (redis-server, on a loopback port of their own) are installed, using the
# machine's package manager when one is missing.
if ! command -v redis-server >/dev/null 2>&1; then
    echo "installing redis-server (needed by the shared-state tests)..." >&2
    _sudo=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then _sudo="sudo"; fi
    if command -v apt-get >/dev/null 2>&1; then
        $_sudo apt-get install -y -qq redis-server >/dev/null 2>&1 \
            || { $_sudo apt-get update -qq >/dev/null 2>&1 && $_sudo apt-get install -y -qq redis-server >/dev/null; }
    elif command -v dnf >/dev/null 2>&1; then
        $_sudo dnf install -y -q redis
    elif command -v brew >/dev/null 2>&1; then
        brew install redis
    fi
    command -v redis-server >/dev/null 2>&1 || { echo "redis-server is missing and could not be installed" >&2; exit 1; }
fi
