#!/usr/bin/env bash
# The one test entry point (README, `make test`, CI):
#
#   scripts/test.sh [pytest args...]        e.g. scripts/test.sh -k kafka -x
#
# 1. installs the package with its dev extras (`pip install -e '.[dev]'`, which builds the Rust
#    extension with maturin) unless the same sources are already installed from this checkout;
# 2. starts NATS, Kafka and Redis with scripts/services.sh and exports AGENTFLOW_TEST_NATS_URL,
#    AGENTFLOW_TEST_KAFKA_URL, AGENTFLOW_TEST_REDIS_URL (a URL already set in the environment
#    is used as is and that broker is not started);
# 3. runs ruff, mypy, stubtest, cargo test + clippy, and pytest; every step runs even if an
#    earlier one failed, and a summary closes the output. Exit status is non-zero if any step
#    failed; pytest collecting nothing (exit 5) counts as a failure.
# Brokers this script started are stopped at the end; brokers that were already running are
# left alone.
#
# Environment knobs:
#   AGENTFLOW_TEST_STEPS   space-separated subset of: install services ruff mypy stubtest cargo pytest
#   AGENTFLOW_FORCE_INSTALL=1   reinstall even if nothing changed
#   AGENTFLOW_PYTEST_TIMEOUT    wall-clock cap for the whole pytest run in seconds (default 1200)
#   AGENTFLOW_KEEP_SERVICES=1   do not stop the brokers this script started
#   PYTHON                       interpreter to use (default python3)
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
PYTHON=${PYTHON:-python3}
STEPS=${AGENTFLOW_TEST_STEPS:-install services ruff mypy stubtest cargo pytest}
PYTEST_TIMEOUT=${AGENTFLOW_PYTEST_TIMEOUT:-1200}
SERVICES=scripts/services.sh
STAMP_DIR=$REPO/target
STAMP=$STAMP_DIR/agentflow-install.stamp

declare -a SUMMARY=()
FAILED=0
STARTED_SERVICES=()

want() { [[ " $STEPS " == *" $1 "* ]]; }
now_ms() { date +%s%3N; }
secs() { local ms=$(( $(now_ms) - $1 )); printf '%d.%ds' $((ms / 1000)) $(((ms % 1000) / 100)); }

# run_step <name> <command...>: run, time and record one step
run_step() {
    local name=$1 t0 rc
    shift
    printf '\n==> %s: %s\n' "$name" "$*"
    t0=$(now_ms)
    "$@"
    rc=$?
    record "$name" "$rc" "$(secs "$t0")"
    return "$rc"
}

record() { # <name> <rc> <duration> [note]
    local status=ok
    if [[ $2 -ne 0 ]]; then
        status="FAILED (exit $2)"
        FAILED=1
    fi
    SUMMARY+=("$(printf '  %-9s %-18s %7s  %s' "$1" "$status" "$3" "${4:-}")")
}

skip() { SUMMARY+=("$(printf '  %-9s %-18s %7s  %s' "$1" skipped - "${2:-}")"); }

# ------------------------------------------------------------------------------------- install
# Fingerprint of what an install depends on: packaging metadata and the Rust sources.
install_fingerprint() {
    {
        "$PYTHON" -c 'import sys; print(sys.executable, sys.version)'
        echo "$REPO"
        find pyproject.toml rust_ext -path rust_ext/target -prune -o -type f \
            \( -name '*.rs' -o -name '*.toml' -o -name 'Cargo.lock' -o -name 'build.rs' \) -print 2>/dev/null \
            | LC_ALL=C sort | xargs -r sha256sum
    } | sha256sum | cut -d' ' -f1
}

# Is agentflow importable, with its native module, from this checkout (not another clone)?
installed_here() {
    local where
    where=$(cd / && "$PYTHON" -c 'import agentflow, agentflow._native, os; print(os.path.dirname(os.path.realpath(agentflow.__file__)))' 2>/dev/null) \
        || return 1
    [[ $where == "$(realpath "$REPO/agentflow")" ]]
}

do_install() {
    local fp
    fp=$(install_fingerprint)
    if [[ ${AGENTFLOW_FORCE_INSTALL:-0} != 1 && -f $STAMP && $(<"$STAMP") == "$fp" ]] && installed_here \
        && "$PYTHON" -c 'import pytest, ruff, mypy' 2>/dev/null; then
        echo "agentflow already installed from $REPO and sources unchanged; skipping pip install"
        return 0
    fi
    "$PYTHON" -m pip install --disable-pip-version-check -q -e '.[dev]' || return $?
    installed_here || {
        echo "pip install finished but 'import agentflow._native' from outside $REPO does not resolve here" >&2
        return 1
    }
    mkdir -p "$STAMP_DIR"
    echo "$fp" >"$STAMP"
}

# ------------------------------------------------------------------------------------ services
url_var() { case $1 in nats) echo AGENTFLOW_TEST_NATS_URL ;; kafka) echo AGENTFLOW_TEST_KAFKA_URL ;; redis) echo AGENTFLOW_TEST_REDIS_URL ;; esac; }

do_services() {
    local svc var line rc=0
    local -a managed=() to_start=()
    # The URLs services.sh serves (ports follow AGENTFLOW_*_PORT).
    local -A local_url=()
    while IFS= read -r line; do
        line=${line#export }
        local_url[${line%%=*}]=${line#*=}
    done < <("$SERVICES" env all)
    for svc in nats kafka redis; do
        var=$(url_var "$svc")
        if [[ -n ${!var:-} && ${!var} != "${local_url[$var]}" ]]; then
            echo "$svc: using $var=${!var} from the environment (not started here)"
            continue
        fi
        export "$var=${local_url[$var]}"
        managed+=("$svc")
        "$SERVICES" status "$svc" >/dev/null 2>&1 || to_start+=("$svc")
    done
    if ((${#to_start[@]})); then
        # Record before starting so a half-started broker is still stopped at the end.
        STARTED_SERVICES+=("${to_start[@]}")
        "$SERVICES" start "${to_start[@]}" >/dev/null || rc=1
    fi
    for svc in "${managed[@]}"; do "$SERVICES" status "$svc" || rc=1; done
    for svc in nats kafka redis; do
        var=$(url_var "$svc")
        echo "$var=${!var}"
    done
    return "$rc"
}

stop_started_services() {
    [[ ${#STARTED_SERVICES[@]} -gt 0 ]] || return 0
    if [[ ${AGENTFLOW_KEEP_SERVICES:-0} == 1 ]]; then
        echo "leaving running (AGENTFLOW_KEEP_SERVICES=1): ${STARTED_SERVICES[*]}"
        return 0
    fi
    printf '\n==> stopping the brokers this run started: %s\n' "${STARTED_SERVICES[*]}"
    local svc
    for svc in "${STARTED_SERVICES[@]}"; do "$SERVICES" stop "$svc" || true; done
    STARTED_SERVICES=()
}
trap stop_started_services EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

# --------------------------------------------------------------------------------------- steps
do_cargo() {
    [[ -f rust_ext/Cargo.toml ]] || { echo "rust_ext/Cargo.toml is missing" >&2; return 1; }
    # pyo3's build script must see the same interpreter as everything else.
    (cd rust_ext && PYO3_PYTHON=$(command -v "$PYTHON") cargo test && \
        PYO3_PYTHON=$(command -v "$PYTHON") cargo clippy --all-targets -- -D warnings)
}

PYTEST_LOG=$STAMP_DIR/pytest-output.log
do_pytest() {
    local rc=0
    local -a color=()
    [[ -t 1 ]] && color=(--color=yes)
    mkdir -p "$STAMP_DIR"
    timeout --foreground -s INT -k 60 "$PYTEST_TIMEOUT" \
        "$PYTHON" -m pytest -q -p no:cacheprovider "${color[@]}" "$@" 2>&1 | tee "$PYTEST_LOG"
    rc=${PIPESTATUS[0]}
    case $rc in
        5) echo "pytest collected no tests: that counts as a failure" >&2 ;;
        124) echo "pytest exceeded AGENTFLOW_PYTEST_TIMEOUT=${PYTEST_TIMEOUT}s" >&2 ;;
    esac
    return "$rc"
}

T_START=$(now_ms)
rm -f "$PYTEST_LOG"
echo "agentflow tests in $REPO ($("$PYTHON" --version 2>&1); CI=${CI:-})"

if want install; then run_step install do_install; else skip install; fi
if want services; then run_step services do_services; else skip services; fi
if want ruff; then run_step ruff "$PYTHON" -m ruff check agentflow tests; else skip ruff; fi
if want mypy; then run_step mypy "$PYTHON" -m mypy agentflow tests; else skip mypy; fi
if want stubtest; then run_step stubtest "$PYTHON" -m mypy.stubtest agentflow._native; else skip stubtest; fi
if want cargo; then run_step cargo do_cargo; else skip cargo; fi
if want pytest; then run_step pytest do_pytest "$@"; else skip pytest; fi

stop_started_services

printf '\n==> summary (%s total)\n' "$(secs "$T_START")"
printf '%s\n' "${SUMMARY[@]}"
# End with pytest's own closing line (e.g. "12 passed, 1 skipped in 3.2s"), colour codes removed.
pytest_closing_line() {
    [[ -f $PYTEST_LOG ]] && want pytest || return 0
    sed 's/\x1b\[[0-9;]*m//g' "$PYTEST_LOG" | grep -E '^=* ?[0-9]+ [a-z]+.* in [0-9.]+s' | tail -n1 | sed 's/^=* *//; s/ *=*$//'
}
if [[ $FAILED -ne 0 ]]; then
    echo "RESULT: FAILED"
    pytest_closing_line
    exit 1
fi
echo "RESULT: all steps passed"
pytest_closing_line
