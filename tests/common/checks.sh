# shellcheck shell=bash
# The checks of the shell test suites (sysext/podman/test.sh, pkg/deb/test.sh): one line per
# check, then "N passed, N failed". Sourced; the caller's $t is a scratch directory.
passed=0 failed=0
check() { # check NAME COMMAND...: run COMMAND, record its result under NAME
    local label=$1
    shift
    if "$@" >"$t/check.log" 2>&1; then
        echo "ok - $label"
        passed=$((passed + 1))
    else
        echo "FAIL - $label"
        sed 's/^/    /' "$t/check.log" | tail -n 20
        failed=$((failed + 1))
    fi
}
# The last line; the status is non-zero on any failure.
summary() {
    echo "$passed passed, $failed failed"
    ((failed == 0))
}
