# perftest -R interop cases, sourced by tests/interop/siw.sh.
#
# run_perftest_cases: for ib_write_bw, ib_read_bw, ib_send_bw, ib_write_lat (all -R), runs
#   - the guest's perftest as server (on $GUEST_IP:$GUEST_RDMA_PORT) and `$ND <test> -R` as
#     client through 127.0.0.1:$FWD_PORT, and
#   - `$ND <test> -R` as server on 127.0.0.1:$HOST_SVC_PORT and the guest's perftest as client
#     to $GUESTFWD_IP -p $GUESTFWD_PORT,
# and calls `pass NAME` or `fail "NAME: reason"` per case. A case that perftest refuses to
# report under TCG ("Correlation coefficient r^2 < 0.9") is run once more. Uses from siw.sh:
# gexec, say, pass, fail, ND, WORK, FWD_PORT, HOST_SVC_PORT, GUEST_IP, GUEST_RDMA_PORT,
# GUESTFWD_IP, GUESTFWD_PORT.

# Small runs: the guest is emulated (TCG).
PERFTEST_BW_ARGS="${PERFTEST_BW_ARGS:--n 50 -s 4096}"
PERFTEST_LAT_ARGS="${PERFTEST_LAT_ARGS:--n 50}"
PERFTEST_TIMEOUT="${PERFTEST_TIMEOUT:-40}"

# Prints the dmesg lines that mean trouble (empty when clean).
_pt_dmesg_bad() {
    gexec 'dmesg | grep -E "WARNING|BUG|Oops|rcu.*stall" | tail -3' 2>/dev/null
}

# Whether a perftest log holds a result row ("<size> <iterations> ...").
_pt_has_row() {
    grep -Eq '^ +[0-9]+ +[0-9]+ +[0-9.]+' "$1"
}

# One case, nd as client: _pt_client NAME TOOL ARGS...; returns 0 pass, 1 fail, 2 retry.
_pt_client() {
    local name=$1 tool=$2
    shift 2
    local args="$*" log="$WORK/$name" persona=${tool#ib_}
    persona=${persona//_/-}
    gexec "pkill -x $tool; timeout $PERFTEST_TIMEOUT $tool -R -d siw0 -p $GUEST_RDMA_PORT $args \
        > /tmp/$name.srv 2>&1; echo rc=\$? >> /tmp/$name.srv" >/dev/null 2>&1 &
    local g=$!
    # perftest starts slowly under TCG: wait for its rdma_cm listener (a kernel TCP listener).
    local i
    for i in $(seq 1 20); do
        gexec "ss -ltnH | grep -q ':$GUEST_RDMA_PORT '" 2>/dev/null && break
        sleep 0.5
    done
    sleep 0.5
    timeout "$PERFTEST_TIMEOUT" "$ND" "$persona" -R -p "$FWD_PORT" $args --quiet \
        --timeout $((PERFTEST_TIMEOUT - 10)) 127.0.0.1 >"$log.nd" 2>&1
    local rc=$?
    wait "$g"
    gexec "cat /tmp/$name.srv" >"$log.perftest" 2>&1
    if grep -q 'r^2 < 0.9\|Correlation coefficient' "$log.perftest" "$log.nd"; then
        return 2
    fi
    if [ $rc -ne 0 ]; then
        _pt_reason="nd exited $rc: $(tail -1 "$log.nd")"
        return 1
    fi
    if ! _pt_has_row "$log.nd"; then
        _pt_reason="nd printed no result row"
        return 1
    fi
    if ! grep -q '^rc=0' "$log.perftest"; then
        _pt_reason="perftest server: $(grep -v '^ *$' "$log.perftest" | tail -2 | tr '\n' ' ')"
        return 1
    fi
    # write_lat's perftest server reports its own latency; the BW servers print the client's.
    if ! _pt_has_row "$log.perftest"; then
        _pt_reason="perftest server printed no result row"
        return 1
    fi
    return 0
}

# One case, nd as server: _pt_server NAME TOOL ARGS...; returns 0 pass, 1 fail, 2 retry.
_pt_server() {
    local name=$1 tool=$2
    shift 2
    local args="$*" log="$WORK/$name" persona=${tool#ib_}
    persona=${persona//_/-}
    timeout "$PERFTEST_TIMEOUT" "$ND" "$persona" -R -p "$HOST_SVC_PORT" --bind_source_ip 127.0.0.1 \
        $args --quiet --timeout $((PERFTEST_TIMEOUT - 10)) >"$log.nd" 2>&1 &
    local s=$!
    sleep 1
    gexec "timeout $PERFTEST_TIMEOUT $tool -R -d siw0 $GUESTFWD_IP -p $GUESTFWD_PORT $args 2>&1; \
        echo rc=\$?" >"$log.perftest" 2>&1
    wait "$s"
    local rc=$?
    if grep -q 'r^2 < 0.9\|Correlation coefficient' "$log.perftest" "$log.nd"; then
        return 2
    fi
    if [ $rc -ne 0 ]; then
        _pt_reason="nd exited $rc: $(tail -1 "$log.nd")"
        return 1
    fi
    if ! grep -q '^rc=0' "$log.perftest"; then
        _pt_reason="perftest client: $(grep -v '^ *$' "$log.perftest" | tail -2 | tr '\n' ' ')"
        return 1
    fi
    if ! _pt_has_row "$log.perftest"; then
        _pt_reason="perftest client printed no result row"
        return 1
    fi
    return 0
}

run_perftest_cases() {
    local tool role name args r bad
    for tool in ib_write_bw ib_read_bw ib_send_bw ib_write_lat; do
        case $tool in
        *_bw) args=$PERFTEST_BW_ARGS ;;
        *) args=$PERFTEST_LAT_ARGS ;;
        esac
        for role in client server; do
            name="perftest-$tool-nd-$role"
            say "case $name ($args)"
            # perftest calibrates its cycle counter inside the TCG guest when it reports, and
            # refuses to report when that fit is poor (r^2 < 0.9): a property of the emulated
            # clock under host load, not of the transfer. Up to three attempts.
            for attempt in 1 2 3; do
                _pt_reason=""
                # `||`: siw.sh runs under `set -e`; a failing case must not end the script.
                r=0
                "_pt_$role" "$name" "$tool" $args || r=$?
                [ $r -eq 2 ] && [ $attempt -lt 3 ] && { say "$name: perftest refused to report (r^2); once more"; sleep 2; continue; }
                break
            done
            bad=$(_pt_dmesg_bad)
            if [ -n "$bad" ]; then
                fail "$name: guest dmesg: $bad"
            elif [ $r -eq 0 ]; then
                pass "$name"
            elif [ $r -eq 2 ]; then
                fail "$name: perftest refused to report three times (r^2 < 0.9)"
            else
                fail "$name: $_pt_reason (logs: $WORK/$name.*)"
            fi
        done
    done
}
