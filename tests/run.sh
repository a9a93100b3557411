#!/bin/sh
# run.sh TEST... -- run each test binary in its own process with a timeout,
# print its output, and close with "N passed, N failed".
timeout_s=${ZB_TEST_TIMEOUT:-600}
pass=0
fail=0
failed=""
for t in "$@"; do
    echo "=== $t"
    if timeout "$timeout_s" "$t"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        failed="$failed $(basename "$t")"
    fi
done
echo
[ -n "$failed" ] && echo "failed:$failed"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
