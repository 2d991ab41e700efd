#!/usr/bin/env bash
# tests/interop/siw.sh - live interop of `nd rping-compat` with Linux rping over the kernel's
# soft-iWARP driver (siw), in the VM of tests/interop/siw-vm.sh (run as root).
#
# Cases, sizes 64, 4000 and 65534, 10 pings each, -v -V on both sides:
#   nd-client  guest `rping -s` (fresh, one-shot), here `nd rping-compat -c` (we are the MPA
#              initiator; 127.0.0.1:$FWD_PORT -> guest $GUEST_IP:$GUEST_RDMA_PORT)
#   nd-server  here `nd rping-compat -s`, guest `rping -c` (we are the MPA responder;
#              guest $GUESTFWD_IP:$GUESTFWD_PORT -> 127.0.0.1:$HOST_SVC_PORT)
# After each case the guest's dmesg must show no WARNING/BUG/Oops/RCU stall. The 4000-octet
# cases are captured on this machine's lo and checked with `tshark -z expert`: no errors, no
# malformed frames, and no warnings but Wireshark's two pre-RFC-6581 ones about MPA rev 2; the
# other sizes are captured headers only, for diagnosis.
# Ends with "N passed, M failed"; exit status 1 if anything failed.
#
# Environment: SIW_VM (the harness script), ND (a built nd; default: cargo build --release),
# KEEP_VM=1 (leave the VM running), SIW_CASES (stages), and the harness's variables, passed on
# to it (SIW_VM_DIR, SSH_PORT, FWD_PORT, HOST_SVC_PORT, GUEST_IP, GUEST_RDMA_PORT, GUESTFWD_IP,
# GUESTFWD_PORT, GUEST_IP6): a second VM runs with its own cache directory and ports.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VM="${SIW_VM:-$ROOT/tests/interop/siw-vm.sh}"
FWD_PORT="${FWD_PORT:-17174}"
HOST_SVC_PORT="${HOST_SVC_PORT:-17175}"
GUEST_IP="${GUEST_IP:-10.0.2.15}"
GUEST_RDMA_PORT="${GUEST_RDMA_PORT:-7174}"
GUESTFWD_IP="${GUESTFWD_IP:-10.0.2.100}"
GUESTFWD_PORT="${GUESTFWD_PORT:-7175}"
COUNT=10
SIZES=(64 4000 65534)
CAPTURE_SIZE=4000
WORK="$(mktemp -d /tmp/siw-interop.XXXXXX)"

# The harness (siw-vm.sh) reads the same variables: a second VM (SIW_VM_DIR, SSH_PORT and the
# forwards' ports) is used by setting them for this script.
export SIW_VM_DIR SSH_PORT FWD_PORT HOST_SVC_PORT GUEST_IP GUEST_RDMA_PORT GUESTFWD_IP GUESTFWD_PORT GUEST_IP6

# SIW_CASES: which stages run (default all): rping mpa bad perftest netem verbs verbs-suite verbs-nd.
SIW_CASES="${SIW_CASES:-rping mpa bad perftest netem verbs verbs-suite verbs-nd}"
want() { [[ " $SIW_CASES " == *" $1 "* ]]; }

passed=0
failed=0
failures=()

say() { printf '[siw.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
pass() { passed=$((passed + 1)); say "PASS $*"; }
fail() { failed=$((failed + 1)); failures+=("$*"); say "FAIL $*"; }
gexec() { "$VM" exec "$@"; }

summary() {
  echo
  for f in "${failures[@]+"${failures[@]}"}"; do echo "failed: $f"; done
  echo "$passed passed, $failed failed"
  echo "(logs in $WORK)"
}

cleanup() {
  local rc=$?
  [ -n "${TCPDUMP_PID:-}" ] && kill "$TCPDUMP_PID" 2>/dev/null || true
  [ -n "${SRV_PID:-}" ] && kill "$SRV_PID" 2>/dev/null || true
  if [ "${KEEP_VM:-0}" != 1 ] && [ "${VM_STARTED:-0}" = 1 ]; then
    "$VM" stop >/dev/null 2>&1 || say "could not stop the VM"
  fi
  exit "$rc"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "run as root (the harness needs it)" >&2; exit 2; }
[ -x "$VM" ] || { echo "no harness at $VM (set SIW_VM)" >&2; exit 2; }

# ------------------------------------------------------------------ build nd
# Release builds (nd, and the netns test for the guest) run while the VM is built and booted.
BUILD_PID=
if [ -z "${ND:-}" ]; then
  say "building nd and the netns test (release), in the background"
  (cd "$ROOT" && cargo build --release -q -p netdirect-cli \
    && cargo test --release -q -p netdirect-soft --test netns --no-run \
    && cargo build --release -q -p netdirect-verbs --example verbs_check \
    && cargo build --release -q -p netdirect-cli --bin ndk-conformance) >"$WORK/build.log" 2>&1 &
  BUILD_PID=$!
  ND="${CARGO_TARGET_DIR:-$ROOT/target}/release/nd"
fi
wait_build() {
  [ -n "$BUILD_PID" ] || return 0
  if ! wait "$BUILD_PID"; then
    cat "$WORK/build.log" >&2
    echo "the release build failed" >&2
    exit 1
  fi
  BUILD_PID=
}

# The release build of netdirect-soft's network-namespace test (for the guest), stripped.
netns_test_binary() {
  local bin
  bin="$(cd "$ROOT" && cargo test --release -q -p netdirect-soft --test netns --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | tail -1)"
  [ -x "$bin" ] || return 1
  strip -o "$WORK/netns-test" "$bin" && echo "$WORK/netns-test"
}

# ------------------------------------------------------------------ the VM
say "VM: deps, build (cached), start, rdma-up"
"$VM" deps >"$WORK/vm-deps.log" 2>&1 || { echo "harness trouble: siw-vm.sh deps failed (see $WORK/vm-deps.log)" >&2; exit 2; }
"$VM" build >"$WORK/vm-build.log" 2>&1 || { echo "harness trouble: siw-vm.sh build failed (see $WORK/vm-build.log)" >&2; exit 2; }
VM_STARTED=1
if ! { "$VM" start && "$VM" rdma-up; } >"$WORK/vm-start.log" 2>&1; then
  say "harness trouble: start/rdma-up failed (see $WORK/vm-start.log); stopping and retrying once"
  "$VM" stop >/dev/null 2>&1 || true
  if ! { "$VM" start && "$VM" rdma-up; } >"$WORK/vm-start2.log" 2>&1; then
    echo "harness trouble: the VM did not come up twice (see $WORK/vm-start*.log); nothing was tested" >&2
    exit 2
  fi
  say "harness trouble: the VM came up on the second start"
fi
gexec 'rdma link show | grep -q "siw0.*ACTIVE"' || { echo "harness trouble: no active siw0 in the guest" >&2; exit 2; }
wait_build
[ -x "$ND" ] || { echo "no nd binary at $ND" >&2; exit 2; }

# ------------------------------------------------------------------ helpers
# Replaces the guest's siw with a variant (a .ko pushed to the guest) or, without one, Debian's.
load_siw() { # [guest .ko path]
  gexec "set -e; rdma link delete siw0 2>/dev/null || true; rmmod siw
    if [ -n '${1:-}' ]; then insmod '${1:-}'; else modprobe siw; fi
    rdma link add siw0 type siw netdev eth0; rdma link show | grep -q 'siw0.*ACTIVE'"
}

# The guest's kernel log since the last check must be clean (and the guest must answer);
# clears it.
dmesg_clean() {
  local out bad
  out="$(gexec 'dmesg | grep -E "WARNING|BUG|Oops|rcu.*stall"; dmesg -C && echo dmesg-checked' 2>&1 || true)"
  bad="$(printf '%s\n' "$out" | grep -v '^dmesg-checked$' || true)"
  if [ -n "$bad" ] || ! printf '%s\n' "$out" | grep -q '^dmesg-checked$'; then
    printf '%s\n' "${out:-(no answer from the guest)}" >"$WORK/dmesg-$1.txt"
    return 1
  fi
}

# Pings in a -v output: "PREFIX rdma-ping-N: ..." lines, N = 0..COUNT-1 in order.
pings_ok() { # file prefix
  local n
  n="$(grep -c "^$2rdma-ping-" "$1" || true)"
  [ "$n" = "$COUNT" ] || return 1
  for ((i = 0; i < COUNT; i++)); do
    grep -q "^$2rdma-ping-$i: " "$1" || return 1
  done
}

start_capture() { # file [snaplen]
  tcpdump -i lo -U -s "${2:-0}" -w "$WORK/$1" "tcp port $FWD_PORT or tcp port $HOST_SVC_PORT" \
    >>"$WORK/tcpdump.log" 2>&1 &
  TCPDUMP_PID=$!
  sleep 1
}

stop_capture() {
  sleep 1
  kill -INT "$TCPDUMP_PID" 2>/dev/null || true
  wait "$TCPDUMP_PID" 2>/dev/null || true
  TCPDUMP_PID=
}

# nd is the MPA initiator: a fresh one-shot `rping -s` in the guest, `nd rping-compat -c` here.
# Returns 0 pass, 1 fail, 3 siw's known first-READ flake ("post send error" in rping -s).
nd_client_once() { # size tag
  local size=$1 tag=$2
  gexec "rm -f /tmp/rs.out; (timeout 90 rping -s -a $GUEST_IP -p $GUEST_RDMA_PORT -v -V -C $COUNT -S $size >/tmp/rs.out 2>&1; echo \"rping-rc=\$?\" >>/tmp/rs.out) </dev/null >/dev/null 2>&1 &
    for i in \$(seq 100); do ss -tln | grep -q '$GUEST_IP:$GUEST_RDMA_PORT ' && exit 0; sleep 0.1; done; echo 'rping -s did not listen' >&2; exit 1" \
    || return 1
  local rc=0
  timeout 200 "$ND" "${ND_FLAGS[@]+"${ND_FLAGS[@]}"}" rping-compat -c -a 127.0.0.1 -p "$FWD_PORT" -v -V -C "$COUNT" -S "$size" --timeout 60 \
    >"$WORK/$tag.nd.out" 2>"$WORK/$tag.nd.err" || rc=$?
  echo "nd-rc=$rc" >>"$WORK/$tag.nd.err"
  gexec "for i in \$(seq 500); do grep -q rping-rc= /tmp/rs.out && break; sleep 0.2; done; cat /tmp/rs.out" \
    >"$WORK/$tag.rping.out" 2>&1 || true
  if grep -q "post send error" "$WORK/$tag.rping.out"; then return 3; fi
  [ "$rc" = 0 ] || return 1
  grep -q '^rping-rc=0$' "$WORK/$tag.rping.out" || return 1
  pings_ok "$WORK/$tag.nd.out" "ping data: " || return 1
  pings_ok "$WORK/$tag.rping.out" "server ping data: " || return 1
}

# nd is the MPA responder: `nd rping-compat -s` here, `rping -c` in the guest.
nd_server_once() { # size tag
  local size=$1 tag=$2
  "$ND" "${ND_FLAGS[@]+"${ND_FLAGS[@]}"}" rping-compat -s -a 127.0.0.1 -p "$HOST_SVC_PORT" -v -V -C "$COUNT" --timeout 90 \
    >"$WORK/$tag.nd.out" 2>"$WORK/$tag.nd.err" &
  SRV_PID=$!
  local i
  for i in $(seq 100); do
    ss -tln | grep -q "127.0.0.1:$HOST_SVC_PORT " && break
    sleep 0.1
  done
  local grc=0
  gexec "timeout 90 rping -c -a $GUESTFWD_IP -p $GUESTFWD_PORT -v -V -C $COUNT -S $size" \
    >"$WORK/$tag.rping.out" 2>&1 || grc=$?
  echo "rping-rc=$grc" >>"$WORK/$tag.rping.out"
  local rc=0
  wait "$SRV_PID" || rc=$?
  SRV_PID=
  echo "nd-rc=$rc" >>"$WORK/$tag.nd.err"
  [ "$grc" = 0 ] && [ "$rc" = 0 ] || return 1
  pings_ok "$WORK/$tag.rping.out" "ping data: " || return 1
  pings_ok "$WORK/$tag.nd.out" "server ping data: " || return 1
}

run_case() { # role size [tag]
  local role=$1 size=$2 tag="${3:-$1-$2}" rc=0 note=""
  gexec 'dmesg -C' || true
  "${role//-/_}_once" "$size" "$tag" || rc=$?
  if [ "$rc" = 3 ]; then
    note=" (retried: siw's first RDMA READ failed, 'post send error', a known Linux-side flake)"
    say "$tag: rping -s reported 'post send error'; retrying once on a fresh connection"
    cp "$WORK/$tag.rping.out" "$WORK/$tag.rping.first-try.out"
    sleep 2
    rc=0
    "${role//-/_}_once" "$size" "$tag" || rc=$?
  fi
  local d=ok
  dmesg_clean "$tag" || { d=bad; GUEST_BROKEN=1; }
  if [ "$rc" = 0 ] && [ "$d" = ok ]; then
    pass "$tag: $COUNT pings validated by both sides, guest dmesg clean$note"
  elif [ "$rc" != 0 ]; then
    fail "$tag: rping exchange failed (see $WORK/$tag.*)$note"
    [ "$d" = ok ] || fail "$tag: guest dmesg has WARNING/BUG/Oops/stall (see $WORK/dmesg-$tag.txt)"
  else
    fail "$tag: guest dmesg has WARNING/BUG/Oops/stall (see $WORK/dmesg-$tag.txt)"
  fi
}

check_capture() { # [pcap]
  local pcap="${1:-capture.pcap}" exp
  exp="$(tshark -r "$WORK/$pcap" -q -z expert 2>/dev/null)" || { fail "tshark could not read the capture"; return; }
  printf '%s\n' "$exp" >"$WORK/tshark-expert.txt"
  local rdmap
  rdmap="$(tshark -r "$WORK/$pcap" -Y 'iwarp_rdma' 2>/dev/null | wc -l)"
  local mpa
  mpa="$(tshark -r "$WORK/$pcap" -Y 'iwarp_mpa.req or iwarp_mpa.rep' 2>/dev/null | wc -l)"
  # Warnings other than the two rev-2 ones that Wireshark (pre-RFC 6581) raises.
  local other
  other="$(printf '%s\n' "$exp" | awk '/^Warns/{w=1; next} /^[A-Z][a-z]+ \(/{w=0} w && /IWARP|TCP|DDP|RDMA|MPA/' \
    | grep -v -e 'Res field is NOT set to zero' -e 'Rev field is NOT set to one' || true)"
  if printf '%s\n' "$exp" | grep -q -e '^Errors' -e 'Malformed'; then
    fail "capture $pcap: tshark reports errors or malformed frames (see $WORK/tshark-expert.txt)"
  elif [ -n "$other" ]; then
    fail "capture $pcap: unexpected tshark warnings: $other"
  elif [ "$mpa" -lt 2 ] || [ "$rdmap" -lt 10 ]; then
    fail "capture $pcap: tshark decoded too little (MPA req/rep $mpa, RDMAP $rdmap): not checked"
  else
    pass "capture $pcap ($CAPTURE_SIZE octets): $mpa MPA frames, $rdmap RDMAP frames, no malformed, only the two rev-2 warnings"
  fi
}

# A reused VM (KEEP_VM) may still run a siw variant from an earlier run.
[ "${KEEP_VM:-0}" = 1 ] && { load_siw || { echo "harness trouble: cannot reload Debian's siw" >&2; exit 2; }; }

# ------------------------------------------------------------------ the cases
# Every size is captured: $CAPTURE_SIZE in full for tshark, the others headers only (kept in
# $WORK for diagnosis: segment sizes and timing of a failed case).
GUEST_BROKEN=0
for size in "${SIZES[@]}"; do
  want rping || break
  if [ "$GUEST_BROKEN" = 1 ]; then
    fail "size $size and later: not run, the guest kernel logged WARNING/BUG/Oops/stall"
    break
  fi
  if [ "$size" = "$CAPTURE_SIZE" ]; then
    start_capture capture.pcap
  else
    start_capture "headers-$size.pcap" 160
  fi
  run_case nd-client "$size"
  [ "$GUEST_BROKEN" = 1 ] || run_case nd-server "$size"
  stop_capture
  [ "$size" = "$CAPTURE_SIZE" ] && check_capture
done

# ------------------------------------------------------------------ MPA variants
# The MPA startup frames of a capture, one line each: "req|rep C=<crc> R=<reject> rev=<n>".
mpa_frames() { # pcap
  tshark -r "$WORK/$1" -Y 'iwarp_mpa.req or iwarp_mpa.rep' -T fields \
    -e iwarp_mpa.key.req -e iwarp_mpa.crc_flag -e iwarp_mpa.rej_flag -e iwarp_mpa.rev 2>/dev/null \
    | awk -F'\t' '{printf "%s C=%s R=%s rev=%s\n", ($1 != "" ? "req" : "rep"), ($2=="1"||$2=="True")?1:0, ($3=="1"||$3=="True")?1:0, $4}'
}

# Every FPDU of a capture checked by Wireshark: "good bad" CRC counts.
crc_counts() { # pcap
  local v
  v="$(tshark -r "$WORK/$1" -Y iwarp_mpa.fpdu -V 2>/dev/null)"
  printf '%s %s\n' "$(printf '%s\n' "$v" | grep -c 'Good CRC32')" "$(printf '%s\n' "$v" | grep -ci 'bad crc')"
}

# run_case with nd flags, a capture, and a check of the startup frames and CRCs:
# mpa_case NAME ROLE "ND FLAGS" "EXPECTED mpa_frames OUTPUT" crc|nocrc
mpa_case() {
  local name=$1 role=$2 flags=$3 want=$4 crc=$5 before=$failed
  read -r -a ND_FLAGS <<<"$flags"
  start_capture "$name.pcap"
  run_case "$role" "$CAPTURE_SIZE" "$name"
  stop_capture
  ND_FLAGS=()
  [ "$failed" = "$before" ] || return 0
  local got counts
  got="$(mpa_frames "$name.pcap" | tr '\n' ';')"
  counts="$(crc_counts "$name.pcap")"
  if [ "$got" != "$want" ]; then
    fail "$name: startup frames [$got], expected [$want]"
  elif [ "$crc" = crc ] && { [ "${counts% *}" -lt 10 ] || [ "${counts#* }" != 0 ]; }; then
    fail "$name: CRCs good/bad $counts (expected every FPDU good)"
  elif [ "$crc" = nocrc ] && [ "$counts" != "0 0" ]; then
    fail "$name: CRCs good/bad $counts on a connection without CRC"
  else
    pass "$name: MPA [$got] CRC good/bad $counts"
    if [ "$crc" = crc ]; then check_capture "$name.pcap"; fi
  fi
}

# Builds siw.ko variants (CRC required; MPA revision 1) from the harness's cached Debian
# kernel source in the harness's rootfs (the guest's kernel headers and compiler), once.
SIW_VARIANTS="${SIW_VM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/siw-vm}/nd-variants"
build_siw_variants() {
  [ -s "$SIW_VARIANTS/siw-crc.ko" ] && [ -s "$SIW_VARIANTS/siw-rev1.ko" ] && return 0
  local vmdir root kver deb src
  vmdir="$(dirname "$SIW_VARIANTS")"
  root="$vmdir/rootfs"
  kver="$(ls "$root/lib/modules" | head -1)"
  deb="$(ls "$vmdir"/debs/linux-source-*_all.deb "$root"/var/cache/apt/archives/linux-source-*_all.deb 2>/dev/null | head -1)"
  [ -n "$kver" ] && [ -n "$deb" ] || { say "no cached rootfs/kernel source in $vmdir"; return 1; }
  src="$(mktemp -d)"
  dpkg-deb --fsys-tarfile "$deb" | tar -xO --wildcards './usr/src/linux-source-*.tar.xz' \
    | tar -xJ -C "$src" --wildcards '*/drivers/infiniband/sw/siw' || return 1
  mkdir -p "$SIW_VARIANTS"
  local v d
  for v in crc rev1; do
    d="$root/usr/src/nd-siw-$v"
    rm -rf "$d"; cp -r "$src"/*/drivers/infiniband/sw/siw "$d"
    case $v in
      crc) sed -i 's/^const bool mpa_crc_required;/const bool mpa_crc_required = true;/' "$d/siw_main.c";;
      rev1) sed -i 's/^u_char mpa_version = MPA_REVISION_2;/u_char mpa_version = MPA_REVISION_1;/' "$d/siw_main.c";;
    esac
    chroot "$root" make -s -C "/usr/src/linux-headers-$kver" M="/usr/src/nd-siw-$v" CONFIG_RDMA_SIW=m modules \
      >"$WORK/siw-$v-build.log" 2>&1 && cp "$d/siw.ko" "$SIW_VARIANTS/siw-$v.ko"
    rm -rf "$d"
  done
  rm -rf "$src"
  [ -s "$SIW_VARIANTS/siw-crc.ko" ] && [ -s "$SIW_VARIANTS/siw-rev1.ko" ]
}

if [ "$GUEST_BROKEN" = 0 ] && want mpa; then
  say "MPA variants"
  mpa_case mpa-crc-asked-by-nd-initiator nd-client "--mpa-crc" "req C=1 R=0 rev=2;rep C=1 R=0 rev=2;" crc
  mpa_case mpa-crc-asked-by-nd-responder nd-server "--mpa-crc" "req C=0 R=0 rev=2;rep C=1 R=0 rev=2;" crc
  mpa_case mpa-no-p2p-offer nd-client "--mpa-p2p false" "req C=0 R=0 rev=2;rep C=0 R=0 rev=2;" nocrc
  if build_siw_variants >"$WORK/siw-variants.log" 2>&1 \
    && "$VM" push "$SIW_VARIANTS/siw-crc.ko" /root/siw-crc.ko >/dev/null 2>&1 \
    && "$VM" push "$SIW_VARIANTS/siw-rev1.ko" /root/siw-rev1.ko >/dev/null 2>&1; then
    if load_siw /root/siw-crc.ko; then
      mpa_case mpa-crc-asked-by-siw-initiator nd-server "" "req C=1 R=0 rev=2;rep C=1 R=0 rev=2;" crc
    else fail "mpa-crc-asked-by-siw-initiator: could not load the CRC-required siw"; fi
    if load_siw /root/siw-rev1.ko; then
      mpa_case mpa-rev1-from-siw nd-server "" "req C=0 R=0 rev=1;rep C=0 R=0 rev=1;" nocrc
    else fail "mpa-rev1-from-siw: could not load the revision-1 siw"; fi
    load_siw || { fail "could not reload Debian's siw"; GUEST_BROKEN=1; }
  else
    fail "siw variants (CRC required, revision 1): could not build or push them (see $WORK/siw-variants.log)"
  fi
fi

# ------------------------------------------------------------------ bad peers
# A case that must fail on our side with a given status and message, leaving siw's dmesg clean.
expect_error() { # name nd-stderr-file status pattern
  local name=$1 err=$2 status=$3 pattern=$4
  if ! grep -q "$status" "$err" || ! grep -Eq "$pattern" "$err"; then
    fail "$name: expected $status and /$pattern/ from nd, got: $(tail -c 300 "$err" | tr '\n' ' ')"
  elif ! dmesg_clean "$name"; then
    fail "$name: guest dmesg has WARNING/BUG/Oops/stall (see $WORK/dmesg-$name.txt)"
  else
    pass "$name: nd reports $(grep -o 'STATUS_[A-Z_]*' "$err" | head -1) ($(grep -Eo "$pattern" "$err" | head -1)), guest dmesg clean"
  fi
}

guest_rping_server() { # count size
  gexec "pkill -x rping; rm -f /tmp/rs.out; (timeout 60 rping -s -a $GUEST_IP -p $GUEST_RDMA_PORT -C $1 -S $2 >/tmp/rs.out 2>&1; echo \"rping-rc=\$?\" >>/tmp/rs.out) </dev/null >/dev/null 2>&1 &
    for i in \$(seq 100); do ss -tln | grep -q '$GUEST_IP:$GUEST_RDMA_PORT ' && exit 0; sleep 0.1; done; exit 1"
}

if [ "$GUEST_BROKEN" = 0 ] && want bad; then
  say "bad peers"
  # A ULP over siw refuses our private data: rsocket's server (rstream) wants its own
  # connection data (version 1) and destroys the request otherwise, so siw answers with a
  # Reply that has R set.
  gexec 'dmesg -C' || true
  gexec "pkill -x rstream; (timeout 60 rstream -b $GUEST_IP -p $GUEST_RDMA_PORT >/tmp/rstream.out 2>&1 &) ;
    for i in \$(seq 100); do ss -tln | grep -q '$GUEST_IP:$GUEST_RDMA_PORT ' && exit 0; sleep 0.1; done; exit 1" || true
  start_capture siw-rejects-private-data.pcap
  timeout 60 "$ND" rping-compat -c -a 127.0.0.1 -p "$FWD_PORT" -C 1 --timeout 20 \
    >"$WORK/siw-rejects-private-data.nd.out" 2>"$WORK/siw-rejects-private-data.nd.err" || true
  stop_capture
  gexec 'pkill -x rstream' || true
  if [ "$(mpa_frames siw-rejects-private-data.pcap | tr '\n' ';')" != "req C=0 R=0 rev=2;rep C=0 R=1 rev=2;" ]; then
    fail "siw-rejects-private-data: no rejecting Reply in the capture: $(mpa_frames siw-rejects-private-data.pcap | tr '\n' ';')"
  else
    expect_error siw-rejects-private-data "$WORK/siw-rejects-private-data.nd.err" STATUS_CONNECTION_REFUSED 'refused'
  fi

  # siw refuses markers: it answers the Request with a Reply that has R set.
  guest_rping_server 1 64
  start_capture siw-rejects-markers.pcap
  timeout 60 "$ND" --mpa-markers rping-compat -c -a 127.0.0.1 -p "$FWD_PORT" -C 1 --timeout 20 \
    >"$WORK/siw-rejects-markers.nd.out" 2>"$WORK/siw-rejects-markers.nd.err" || true
  stop_capture
  gexec 'pkill -x rping' || true
  if [ "$(mpa_frames siw-rejects-markers.pcap | tr '\n' ';')" != "req C=0 R=0 rev=2;rep C=0 R=1 rev=2;" ]; then
    fail "siw-rejects-markers: no rejecting Reply in the capture: $(mpa_frames siw-rejects-markers.pcap | tr '\n' ';')"
  else
    expect_error siw-rejects-markers "$WORK/siw-rejects-markers.nd.err" STATUS_CONNECTION_REFUSED 'refused'
  fi

  # We read the client's source with a wrong STag key: siw terminates the connection.
  "$ND" rping-compat -s -a 127.0.0.1 -p "$HOST_SVC_PORT" -C 1 -V --inject-bad-stag --timeout 30 \
    >"$WORK/bad-stag.nd.out" 2>"$WORK/bad-stag.nd.err" &
  SRV_PID=$!
  for i in $(seq 100); do ss -tln | grep -q "127.0.0.1:$HOST_SVC_PORT " && break; sleep 0.1; done
  gexec "timeout 40 rping -c -a $GUESTFWD_IP -p $GUESTFWD_PORT -C 1 -S 4000" >"$WORK/bad-stag.rping.out" 2>&1 || true
  wait "$SRV_PID" || true
  SRV_PID=
  expect_error bad-stag "$WORK/bad-stag.nd.err" STATUS_CONNECTION_ABORTED 'the peer sent a Terminate[^(]*'

  # siw goes away mid-transfer: rping -s is killed while 64 KiB pings run.
  guest_rping_server 100000 65534
  timeout 60 "$ND" rping-compat -c -a 127.0.0.1 -p "$FWD_PORT" -C 100000 -S 65534 --timeout 20 \
    >"$WORK/siw-dies.nd.out" 2>"$WORK/siw-dies.nd.err" &
  CLI_PID=$!
  sleep 4
  gexec 'pkill -9 -x rping' || true
  nd_rc=0
  wait "$CLI_PID" || nd_rc=$?
  if [ "$nd_rc" = 124 ]; then
    fail "siw-dies: nd did not notice within 60 s"
  else
    expect_error siw-dies "$WORK/siw-dies.nd.err" STATUS_CONNECTION_ABORTED '(disconnected|terminated)[^:]*'
  fi
fi

# ------------------------------------------------------------------ perftest
if [ "$GUEST_BROKEN" = 0 ] && want perftest && [ -f "$ROOT/tests/interop/cases/perftest.sh" ]; then
  say "perftest -R"
  # shellcheck source=cases/perftest.sh
  . "$ROOT/tests/interop/cases/perftest.sh"
  run_perftest_cases
fi

# ------------------------------------------------------------------ netem in the guest
# This machine's kernel has no sch_netem; the guest's has: run the network-namespace test
# there, where a missing netem fails instead of skipping.
if [ "$GUEST_BROKEN" = 0 ] && want netem; then
  say "netns + netem test inside the guest"
  if NETNS_BIN="$(netns_test_binary)" && "$VM" push "$NETNS_BIN" /root/netns-test >/dev/null 2>&1; then
    if gexec 'cd /root && ND_NETNS_REQUIRE_NETEM=1 timeout 300 ./netns-test --exact netns_matrix --nocapture' \
      >"$WORK/netns.out" 2>&1; then
      pass "netns in the guest: $(grep -c '^netns ' "$WORK/netns.out") cases, $(grep -o 'netem dropped .*' "$WORK/netns.out")"
      grep '^netns ' "$WORK/netns.out" | sed 's/^/    /' >&2
    else
      fail "netns in the guest (see $WORK/netns.out)"
    fi
  else
    fail "netns in the guest: could not build or push the test binary"
  fi
fi

# ------------------------------------------------------------------ the verbs provider
# netdirect-verbs' verbs_check in the guest: one adapter, listener + connector, write,
# send/receive, read (data checked), CQ notification, disconnect, flush, reject with private
# data; on siw (iWARP) and rxe (RoCEv2), IPv4 and IPv6.
GUEST_IP6="${GUEST_IP6:-fd5a:5157:7369:77::15}"
if [ "$GUEST_BROKEN" = 0 ] && want verbs; then
  say "verbs provider in the guest (siw, rxe)"
  VC="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/verbs_check"
  if [ -x "$VC" ] || (cd "$ROOT" && cargo build --release -q -p netdirect-verbs --example verbs_check) >>"$WORK/build.log" 2>&1; then
    strip -o "$WORK/verbs_check" "$VC" && "$VM" push "$WORK/verbs_check" /root/verbs_check >/dev/null 2>&1
    port=7300
    for dev in siw rxe; do
      if [ "$dev" = rxe ]; then
        gexec 'rdma link delete siw0; rdma link add rxe0 type rxe netdev eth0' >"$WORK/verbs-rxe-up.log" 2>&1 \
          || { fail "verbs: could not swap siw0 for rxe0 (see $WORK/verbs-rxe-up.log)"; break; }
      fi
      for ip in "$GUEST_IP" "$GUEST_IP6"; do
        port=$((port + 1))
        if gexec "timeout 120 /root/verbs_check $ip $port" >"$WORK/verbs-$dev-$port.out" 2>&1; then
          pass "verbs on $dev $ip: $(grep -o 'PASS .*' "$WORK/verbs-$dev-$port.out" | cut -c6-)"
        else
          fail "verbs on $dev $ip: $(grep -o 'FAIL .*' "$WORK/verbs-$dev-$port.out" || echo "no verdict, see $WORK/verbs-$dev-$port.out")"
        fi
      done
      dmesg_clean "verbs-$dev" || fail "verbs on $dev: the guest kernel logged WARNING/BUG/Oops/stall (see $WORK/dmesg-verbs-$dev.txt)"
    done
    gexec 'rdma link delete rxe0 2>/dev/null; rdma link show | grep -q siw0 || rdma link add siw0 type siw netdev eth0' >/dev/null 2>&1 || true
  else
    fail "verbs: could not build verbs_check (see $WORK/build.log)"
  fi
fi

# ------------------------------------------------------------------ the NDK suite over verbs
# The provider-independent NDK suite (ndk-conformance --provider verbs) in the guest, on siw
# (iWARP) and rxe (RoCEv2), IPv4 and IPv6: any FAILED case fails the stage; every skip names
# the capability or declared deviation it skipped by (kept in the log, counted in the line).
if [ "$GUEST_BROKEN" = 0 ] && want verbs-suite; then
  say "NDK conformance suite over the verbs provider in the guest (siw, rxe)"
  t0=$SECONDS
  NC="${CARGO_TARGET_DIR:-$ROOT/target}/release/ndk-conformance"
  if [ -x "$NC" ] || (cd "$ROOT" && cargo build --release -q -p netdirect-cli --bin ndk-conformance) >>"$WORK/build.log" 2>&1; then
    strip -o "$WORK/ndk-conformance" "$NC" && "$VM" push "$WORK/ndk-conformance" /root/ndk-conformance >/dev/null 2>&1
    for dev in siw rxe; do
      if [ "$dev" = rxe ]; then
        gexec 'rdma link delete siw0 2>/dev/null; rdma link show | grep -q rxe0 || rdma link add rxe0 type rxe netdev eth0' \
          >"$WORK/verbs-suite-rxe-up.log" 2>&1 \
          || { fail "verbs-suite: could not swap siw0 for rxe0 (see $WORK/verbs-suite-rxe-up.log)"; break; }
      else
        gexec 'rdma link delete rxe0 2>/dev/null; rdma link show | grep -q siw0 || rdma link add siw0 type siw netdev eth0' \
          >"$WORK/verbs-suite-siw-up.log" 2>&1 || true
      fi
      for ip in "$GUEST_IP" "$GUEST_IP6"; do
        out="$WORK/verbs-suite-$dev-${ip//:/_}.out"
        gexec "timeout 300 /root/ndk-conformance --provider verbs -a $ip" >"$out" 2>&1 || true
        line="$(grep '^ndk-conformance: provider verbs:' "$out" || true)"
        if [ -n "$line" ] && ! grep -q '^FAILED' "$out" && [[ "$line" == *", 0 failed" ]]; then
          pass "verbs-suite on $dev $ip: ${line#ndk-conformance: provider verbs: }"
          grep '^skipped' "$out" | sed 's/^/    /' >&2 || true
        else
          fail "verbs-suite on $dev $ip: ${line:-no summary} $(grep '^FAILED' "$out" | head -3 | tr '\n' ' ')(see $out)"
        fi
      done
      dmesg_clean "verbs-suite-$dev" || fail "verbs-suite on $dev: the guest kernel logged WARNING/BUG/Oops/stall (see $WORK/dmesg-verbs-suite-$dev.txt)"
    done
    gexec 'rdma link delete rxe0 2>/dev/null; rdma link show | grep -q siw0 || rdma link add siw0 type siw netdev eth0' >/dev/null 2>&1 || true
    say "verbs-suite took $((SECONDS - t0)) s"
  else
    fail "verbs-suite: could not build ndk-conformance (see $WORK/build.log)"
  fi
fi

# ------------------------------------------------------------------ nd over the verbs provider
# `nd … --provider verbs` in the guest on siw against nd (soft) here, both roles, and against
# perftest -R in the guest; the nd-vs-ib_write_bw figures (see cases/verbs-nd.sh).
if [ "$GUEST_BROKEN" = 0 ] && want verbs-nd; then
  say "nd over the verbs provider in the guest (siw)"
  # shellcheck source=cases/verbs-nd.sh
  . "$ROOT/tests/interop/cases/verbs-nd.sh"
  run_verbs_nd_cases
fi

summary
[ "$failed" = 0 ]
