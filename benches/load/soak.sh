#!/usr/bin/env bash
# Soak: MINUTES (default 30) of mixed, moderate load through the real release binary, on
# 127.0.0.1 only, recording the edge's resources once a minute so that a leak shows as a slope.
#
#   SIPp phones (TCP) -> stunnel client (TLS, dev-pki Snom-style device certificate, user 101)
#     -> pbx-edge (target/release/pbx-edge run --config <generated>) -> SIPp PBX (plain UDP)
#
# Running at once for the whole time:
#   calls         --call-rate calls/s (default 2), each on its own new TLS connection:
#                 INVITE (RTP/SAVP + SDES) / 100 / 180 / 200 / ACK, media both ways for
#                 --hold-secs (default 10; SIPp plays 50 packets/s each way: SRTP from the phone,
#                 protected by `cargo run --example soak_media` with the key of the phone's
#                 offer, plain RTP from the PBX), then BYE. About call-rate x hold calls are up
#                 at any time (default 20) and 2 x 50 x that many packets/s are relayed.
#   re-registers  --phones phones (default 20), each on its own long-lived TLS connection,
#                 refreshing its registration every --rereg-secs (default 5) with the same
#                 Call-ID and increasing CSeq; they unregister at the end.
#   registers     --reg-rate REGISTERs/s (default 1), each on a new TLS connection closed after
#                 its 200 (connection churn: handshake, binding, connection loss).
# The PBX SIPp is registrar and callee in one scenario (REGISTER -> 200; INVITE -> answer,
# plain RTP, BYE -> 200) and checks that the edge's offer is RTP/AVP without a=crypto.
#
# Each minute (and at minute 0, once the load runs) one CSV row: edge RSS (VmRSS kB), open file
# descriptors (/proc/PID/fd), threads, SIP transactions, calls (gauge and /api/calls), TLS
# connections and registrations, media streams and port pairs, media packets relayed (total
# and per second over the minute), media packets dropped, and calls answered / ended so far
# (from /metrics). After the load the script waits (bounded) for every gauge to return to 0 and
# writes a last row "end".
#
# Usage: benches/load/soak.sh [--minutes 30] [--call-rate 2] [--hold-secs 10] [--phones 20]
#          [--rereg-secs 5] [--reg-rate 1] [--csv FILE] [--edge target/release/pbx-edge]
#          [--keep-logs DIR]
# --minutes 1 is the smoke check. The CSV goes to --csv (default: soak-<UTC time>.csv in the
# current directory); the summary (first/last/min/max of RSS and fds after the first 2 minutes,
# SIPp's results, the clean-up verdict) is printed at the end and written beside the CSV
# (<name>.summary.txt).
# Every process it starts is stopped by its PID (also on error and Ctrl-C); temporary files live
# in a mktemp directory deleted at exit. Needs sipp (Debian sip-tester, root or CAP_NET_RAW for
# play_pcap_audio), stunnel (stunnel4), curl, ss; builds the edge with `cargo build --release`
# unless --edge is given. Exit status: 0 done and clean; 1 set-up failed; 2 usage; 3 a gauge
# did not return to 0; 4 SIPp counted failed calls or registrations, or a phone SIPp had to be
# stopped (a request it sent was never answered).
# Results and how to read them: BENCHMARKS.md, "Soak".
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SCEN=$HERE/sip
# shellcheck source=benches/load/lib.sh
. "$HERE/lib.sh"

MINUTES=30
CALL_RATE=2
HOLD_SECS=10
PHONES=20
REREG_SECS=5
REG_RATE=1
CSV=
EDGE_BIN=
KEEP_LOGS=

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
num() { case $2 in '' | *[!0-9]*) echo "$1 needs a whole number" >&2; exit 2 ;; esac; }
while [ $# -gt 0 ]; do
  case $1 in
    --minutes) num "$1" "${2:-}"; MINUTES=$2; shift 2 ;;
    --call-rate) num "$1" "${2:-}"; CALL_RATE=$2; shift 2 ;;
    --hold-secs) num "$1" "${2:-}"; HOLD_SECS=$2; shift 2 ;;
    --phones) num "$1" "${2:-}"; PHONES=$2; shift 2 ;;
    --rereg-secs) num "$1" "${2:-}"; REREG_SECS=$2; shift 2 ;;
    --reg-rate) num "$1" "${2:-}"; REG_RATE=$2; shift 2 ;;
    --csv) CSV=$2; shift 2 ;;
    --edge) EDGE_BIN=$2; shift 2 ;;
    --keep-logs) KEEP_LOGS=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
[ "$MINUTES" -ge 1 ] && [ "$MINUTES" -le 240 ] || { echo "--minutes must be 1..240" >&2; exit 2; }
[ "$CALL_RATE" -ge 1 ] && [ "$CALL_RATE" -le 50 ] || { echo "--call-rate must be 1..50" >&2; exit 2; }
[ "$HOLD_SECS" -ge 3 ] && [ "$HOLD_SECS" -le 50 ] || { echo "--hold-secs must be 3..50 (the media timeout is 60 s)" >&2; exit 2; }
[ "$PHONES" -ge 1 ] && [ "$PHONES" -le 500 ] || { echo "--phones must be 1..500" >&2; exit 2; }
[ "$REREG_SECS" -ge 1 ] && [ "$REREG_SECS" -le 60 ] || { echo "--rereg-secs must be 1..60" >&2; exit 2; }
[ "$REG_RATE" -le 50 ] || { echo "--reg-rate must be 0..50" >&2; exit 2; }
CSV=${CSV:-soak-$(date -u +%Y%m%dT%H%M%SZ).csv}

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

for tool in sipp stunnel curl ss; do
  command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install sip-tester stunnel4 curl iproute2)"
done

if [ -z "$EDGE_BIN" ]; then
  log "building the edge: cargo build --release --bin pbx-edge"
  (cd "$ROOT" && cargo build --release --quiet --bin pbx-edge) || die "cargo build failed"
  EDGE_BIN=$ROOT/target/release/pbx-edge
fi
[ -x "$EDGE_BIN" ] || die "no edge binary at $EDGE_BIN"
EDGE_BIN=$(realpath "$EDGE_BIN")

# ---------------------------------------------------------------- processes, by PID only
TMP=$(mktemp -d -t pbx-edge-soak.XXXXXX)
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------- ports, all on 127.0.0.1
# Even ports with the next three free: the media ports among them carry RTP/RTCP pairs.
TLS_PORT=$(free_port 4); PBX_LISTEN_PORT=$(free_port 4); ADMIN_PORT=$(free_port 4)
STUNNEL_PORT=$(free_port 4); PBX_PORT=$(free_port 4); PBX_MEDIA_PORT=$(free_port 4)
CALL_MEDIA_PORT=$(free_port 4); REG_MEDIA_PORT=$(free_port 4); REREG_MEDIA_PORT=$(free_port 4)
MEDIA_MIN=20000; MEDIA_MAX=29999

# ---------------------------------------------------------------- media, PKI, config, peers
log "temporary directory $TMP"
CRYPTO=$(sed -n 's/^a=crypto:1 \(AES_CM_128_HMAC_SHA1_80 inline:[^ ]*\)$/\1/p' "$SCEN/soak-phone-call.xml")
[ -n "$CRYPTO" ] || die "no a=crypto line in $SCEN/soak-phone-call.xml"
# The media plays one second less than the hold, so that none is in flight at the BYE.
log "writing the media streams: cargo run --example soak_media"
(cd "$ROOT" && cargo run --quiet --example soak_media -- "$TMP" $((HOLD_SECS - 1)) "$CRYPTO") \
  >"$TMP/soak_media.log" 2>&1 || { cat "$TMP/soak_media.log" >&2; die "soak_media failed"; }

"$EDGE_BIN" dev-pki --out "$TMP/pki" --name sbc.test >"$TMP/dev-pki.log" 2>&1 \
  || { cat "$TMP/dev-pki.log" >&2; die "pbx-edge dev-pki failed"; }
PKI=$TMP/pki
CONFIG=$PKI/soak.toml
# The soak holds many calls of the one device at once: its call and port caps are raised.
write_edge_config "$CONFIG" benches/load/soak.sh "max_calls_per_device = 1000" \
  "max_ports_per_device = 4000"
"$EDGE_BIN" check-config --config "$CONFIG" >"$TMP/check-config.log" 2>&1 \
  || { cat "$TMP/check-config.log" >&2; die "generated config refused"; }

write_stunnel_conf "$TMP/stunnel.conf" warning

start edge "$TMP" "$EDGE_BIN" run --config "$CONFIG"
EDGE_PID=$LAST_PID
ADMIN=http://127.0.0.1:$ADMIN_PORT
wait_edge_ready "$EDGE_PID" "$TMP/edge.log"
log "edge pid $EDGE_PID ready: tls 127.0.0.1:$TLS_PORT, pbx side 127.0.0.1:$PBX_LISTEN_PORT, admin $ADMIN"
start stunnel "$TMP" stunnel "$TMP/stunnel.conf"
STUNNEL_PID=$LAST_PID
wait_port tcp "$STUNNEL_PORT" 10 || { cat "$TMP/stunnel.log" >&2; die "stunnel did not listen"; }

SECS=$((MINUTES * 60))
# The PBX: one SIPp for everything, bounded by -timeout (the soak, the last calls, margin).
# -deadcall_wait 2000: SIPp ignores a message for a Call-ID that ended less than this ago (33 s
# by default), and the edge refreshes a registration with the same Call-ID every --rereg-secs.
start sipp-pbx "$TMP" sipp -sf "$SCEN/soak-pbx.xml" -t u1 -i 127.0.0.1 -p "$PBX_PORT" \
  -mi 127.0.0.1 -mp "$PBX_MEDIA_PORT" -m 10000000 -l 5000 -timeout "$((SECS + HOLD_SECS + 120))s" \
  -deadcall_wait 2000 -nostdin -trace_err -error_file "$TMP/pbx-errors.log" -trace_screen -screen_file "$TMP/pbx-screen.log"
SIPP_PBX_PID=$LAST_PID
wait_port udp "$PBX_PORT" 10 || { cat "$TMP/sipp-pbx.log" >&2; die "SIPp (PBX) did not bind udp $PBX_PORT"; }

# The phones. Each SIPp is bounded by -m and -timeout.
sed -e "s/@INTERVAL_MS@/$((REREG_SECS * 1000))/" -e "s/@LOOPS@/$((SECS / REREG_SECS))/" \
  "$SCEN/soak-phone-reregister.xml" >"$TMP/soak-phone-reregister.xml"
BOUND=$((SECS + HOLD_SECS + 60))
phone() { # NAME MEDIA_PORT SIPP-ARGS...: a phone SIPp towards the stunnel client
  local name=$1 mp=$2
  shift 2
  start "$name" "$TMP" sipp -t tn -i 127.0.0.1 -mi 127.0.0.1 -mp "$mp" -nostdin \
    -max_socket 4000 -timeout "${BOUND}s" -timeout_error -trace_err -error_file "$TMP/$name-errors.log" \
    -trace_screen -screen_file "$TMP/$name-screen.log" "$@" "127.0.0.1:$STUNNEL_PORT"
}
phone sipp-rereg "$REREG_MEDIA_PORT" -sf "$TMP/soak-phone-reregister.xml" -s 101 \
  -r "$PHONES" -rp "$((REREG_SECS * 1000))" -m "$PHONES" -l "$PHONES"
UAC_PIDS=("$LAST_PID:sipp-rereg")
if [ "$REG_RATE" -gt 0 ]; then
  phone sipp-reg "$REG_MEDIA_PORT" -sf "$SCEN/phone-register.xml" -s 101 \
    -r "$REG_RATE" -m $((REG_RATE * SECS)) -l $((REG_RATE * 30 + 10))
  UAC_PIDS+=("$LAST_PID:sipp-reg")
fi
phone sipp-call "$CALL_MEDIA_PORT" -sf "$SCEN/soak-phone-call.xml" -s 200 \
  -r "$CALL_RATE" -m $((CALL_RATE * SECS)) -l $((CALL_RATE * (HOLD_SECS + 30))) -d $((HOLD_SECS * 1000))
UAC_PIDS+=("$LAST_PID:sipp-call")
T0=$(date +%s)
log "load running for $MINUTES min: $CALL_RATE calls/s held ${HOLD_SECS} s with media, $PHONES phones re-registering every ${REREG_SECS} s, $REG_RATE REGISTER/s on new connections"

# ---------------------------------------------------------------- sampling
metric() { awk -v n="$1" '$1 == n {print $2; f = 1} END {if (!f) print 0}' "$2"; }
metric_sum() { awk -v n="$1" 'index($1, n "{") == 1 || $1 == n {s += $2} END {printf "%.0f\n", s + 0}' "$2"; }
LAST_PACKETS=0
LAST_T=$T0
echo "minute,elapsed_s,rss_kb,fds,threads,sip_transactions,calls_active,api_calls,tls_connections,registrations,media_streams,media_port_pairs,media_packets_total,media_packets_per_s,media_dropped_total,calls_answered_total,calls_ended_bye_total,calls_ended_other_total,sip_requests_total" >"$CSV"
sample() { # LABEL
  local m=$TMP/metrics.txt now packets pps api
  curl -fsS --max-time 5 "$ADMIN/metrics" >"$m" 2>/dev/null || : >"$m"
  api=$({ curl -fsS --max-time 5 "$ADMIN/api/calls" 2>/dev/null || echo '?'; } | { grep -o '"call_id"\|^?' || true; } | awk '$0 == "?" {q = 1} END {print q ? "?" : NR}')
  now=$(date +%s)
  packets=$(metric_sum pbx_edge_media_packets_total "$m")
  pps=$(awk -v d="$((packets - LAST_PACKETS))" -v t="$((now - LAST_T))" 'BEGIN { if (t > 0) printf "%.0f", d / t; else print 0 }')
  LAST_PACKETS=$packets
  LAST_T=$now
  local ended_other
  ended_other=$(awk '/^pbx_edge_calls_total\{/ && !/outcome="(answered|bye|challenged|failed|cancelled|refused)"/ {s += $2} END {printf "%.0f\n", s + 0}' "$m")
  echo "$1,$((now - T0)),$(awk '$1 == "VmRSS:" {print $2}' "/proc/$EDGE_PID/status"),$(find "/proc/$EDGE_PID/fd" -mindepth 1 -maxdepth 1 | wc -l),$(awk '$1 == "Threads:" {print $2}' "/proc/$EDGE_PID/status"),$(metric pbx_edge_sip_transactions_active "$m"),$(metric pbx_edge_calls_active "$m"),$api,$(metric pbx_edge_tls_connections_active "$m"),$(metric pbx_edge_registrations_active "$m"),$(metric pbx_edge_media_active_streams "$m"),$(metric pbx_edge_media_port_pairs_in_use "$m"),$packets,$pps,$(metric_sum pbx_edge_media_dropped_total "$m"),$(metric 'pbx_edge_calls_total{outcome="answered"}' "$m"),$(metric 'pbx_edge_calls_total{outcome="bye"}' "$m"),$ended_other,$(metric_sum pbx_edge_sip_requests_total "$m")" >>"$CSV"
  tail -1 "$CSV" >&2
}
check_alive() {
  alive "$EDGE_PID" || { tail -20 "$TMP/edge.log" >&2; die "the edge exited during the soak"; }
  alive "$SIPP_PBX_PID" || { tail -20 "$TMP/sipp-pbx.log" >&2; die "SIPp (PBX) exited during the soak"; }
}
sleep 5
head -1 "$CSV" >&2
sample 0
for minute in $(seq 1 "$MINUTES"); do
  while [ "$(date +%s)" -lt $((T0 + minute * 60)) ]; do
    check_alive
    sleep 1
  done
  sample "$minute"
done

# ---------------------------------------------------------------- end of the load
# The phones end by themselves (-m; the re-registering ones after their last refresh and
# unregistration); bounded wait, then by PID.
log "load time over: waiting for the phones' last calls and registrations"
declare -A RC
deadline=$(($(date +%s) + HOLD_SECS + REREG_SECS + 60))
for entry in "${UAC_PIDS[@]}"; do
  pid=${entry%%:*}
  while alive "$pid" && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.5; done
  if alive "$pid"; then kill -USR1 "$pid" 2>/dev/null || true; sleep 2; fi
  stop_pid "$pid" "${entry#*:}"
  RC[${entry#*:}]=$LAST_RC
done
kill -USR1 "$SIPP_PBX_PID" 2>/dev/null || true
for _ in $(seq 1 30); do alive "$SIPP_PBX_PID" || break; sleep 0.2; done
stop_pid "$SIPP_PBX_PID" sipp-pbx

# Gauges back to 0 (bounded: RFC 3261 timers keep transactions up to 64 s after their last
# message), then the last row.
names="pbx_edge_calls_active pbx_edge_sip_transactions_active pbx_edge_media_active_streams pbx_edge_media_port_pairs_in_use pbx_edge_tls_connections_active pbx_edge_registrations_active"
t_end=$(date +%s)
clean=no
for _ in $(seq 1 200); do
  curl -fsS --max-time 2 "$ADMIN/metrics" >"$TMP/metrics-end.txt" 2>/dev/null || true
  calls=$(curl -fsS --max-time 2 "$ADMIN/api/calls" 2>/dev/null || echo '?')
  gauges=""
  for n in $names; do gauges+="${n#pbx_edge_}=$(metric "$n" "$TMP/metrics-end.txt") "; done
  if [ "$calls" = '{"calls":[]}' ] && ! grep -Eq '=[1-9]' <<<"$gauges"; then clean=yes; break; fi
  sleep 0.5
done
sample end

screen_count() { # "Successful call" | "Failed call" from a SIPp screen file (cumulative)
  [ -f "$2" ] || { echo 0; return; }
  awk -F'|' -v k="$1" '{ sub(/^ +/, "", $1) } index($1, k) == 1 { v = $3; gsub(/[^0-9]/, "", v); n = v } END { print n + 0 }' "$2" 2>/dev/null
}
SUMMARY=$TMP/summary.txt
{
  echo "== soak: $MINUTES min, $CALL_RATE calls/s held ${HOLD_SECS} s with media both ways, $PHONES phones re-registering every ${REREG_SECS} s, $REG_RATE REGISTER/s on new connections"
  for name in sipp-call sipp-rereg sipp-reg sipp-pbx; do
    f=$TMP/$name-screen.log
    [ "$name" = sipp-pbx ] && f=$TMP/sipp-pbx.log
    [ -f "$f" ] || [ "$name" != sipp-reg ] || continue
    echo "$name: $(screen_count "Successful call" "$f") successful, $(screen_count "Failed call" "$f") failed (SIPp's own count; exit status ${RC[$name]:-n/a}); aborted calls in its error log: $(grep -o 'Aborting call\|Dead call\|unexpected message' "$TMP/$name-errors.log" 2>/dev/null | wc -l)"
  done
  echo "after the load: $([ "$clean" = yes ] && echo "CLEAN after $(($(date +%s) - t_end)) s" || echo "NOT CLEAN after 100 s"): /api/calls=$(head -c 120 <<<"${calls:-?}") $gauges"
  echo "edge peak RSS (VmHWM) $(awk '$1 == "VmHWM:" {print $2}' "/proc/$EDGE_PID/status") kB"
  echo "media dropped by reason: $(grep '^pbx_edge_media_dropped_total{' "$TMP/metrics-end.txt" | sed 's/pbx_edge_media_dropped_total//' | tr '\n' ' ')"
  echo "calls by outcome: $(grep '^pbx_edge_calls_total{' "$TMP/metrics-end.txt" | sed 's/pbx_edge_calls_total//' | tr '\n' ' ')"
  echo "transaction timeouts: $(grep '^pbx_edge_sip_transaction_timeouts_total{' "$TMP/metrics-end.txt" | sed 's/pbx_edge_sip_transaction_timeouts_total//' | tr '\n' ' ')"
  # Flatness: the minutes after the first two (warm-up: allocator and connection pools).
  awk -F, -v skip=2 'NR > 1 && $1 != "end" && $1 + 0 >= skip {
      n++; r = $3; f = $4
      if (n == 1) { r0 = r; f0 = f; rmin = r; rmax = r; fmin = f; fmax = f }
      if (r < rmin) rmin = r; if (r > rmax) rmax = r; if (f < fmin) fmin = f; if (f > fmax) fmax = f
      r1 = r; f1 = f }
    END { if (n) printf "minutes %d..end (%d samples): RSS %d -> %d kB (min %d, max %d, change %+.1f%%); fds %d -> %d (min %d, max %d)\n",
      skip, n, r0, r1, rmin, rmax, (r0 ? 100 * (r1 - r0) / r0 : 0), f0, f1, fmin, fmax }' "$CSV"
  echo "CSV: $CSV"
  echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); load average now $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$SUMMARY"
cp "$SUMMARY" "${CSV%.csv}.summary.txt"

[ "$clean" = yes ] || exit 3
# Every phone SIPp must have ended by itself with every call successful (exit 0): a phone that
# stalled (a request never answered) keeps its SIPp running until it is stopped here.
for name in sipp-call sipp-rereg sipp-reg; do
  [ -f "$TMP/$name-screen.log" ] || continue
  [ "$(screen_count "Failed call" "$TMP/$name-screen.log")" = 0 ] || exit 4
  [ "${RC[$name]:-0}" = 0 ] || exit 4
done
exit 0
