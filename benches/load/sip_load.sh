#!/usr/bin/env bash
# End-to-end SIP signalling load through the real pbx-edge binary, with real peers, on
# 127.0.0.1 only:
#
#   SIPp UAC (phones, TCP, -t tn: one connection per call)
#     -> stunnel client (TLS, the development Snom-style device certificate, MAC 000413A1B2C3)
#     -> pbx-edge  (target/release/pbx-edge run --config <generated>)
#     -> SIPp UAS  (the PBX, plain UDP)
#
# Three phases, each a ramp of SIPp call rates with a fixed number of seconds per step:
#   register  REGISTER / 200 (one new TLS connection per REGISTER, closed after the 200)
#   reregister  the same REGISTER, all on one TLS connection (-t t1): re-registrations of a
#             connected phone, no handshakes
#   call      INVITE (RTP/SAVP + a=crypto SDES offer) / 100 / 180 / 200 (RTP/SAVP answer
#             checked) / ACK / hold / BYE / 200, one new TLS connection per call
# A ramp stops at the first step with a failed call, or when SIPp can no longer start calls
# at the asked rate (the machine is saturated). Per step it prints calls/s, failures, SIPp's
# response times (INVITE or REGISTER sent -> 200 received, TLS handshake included), the edge's
# CPU per call (utime+stime from /proc/<pid>/stat) and RSS, and the CPU of every other process
# so the limiting one shows. After each phase it checks that /api/calls is empty and that the
# call, transaction, media and connection gauges in /metrics are back to 0.
#
# Usage: benches/load/sip_load.sh [--phases register,reregister,call] [--call-rates 10,20,40]
#          [--reg-rates 20,50,100] [--rereg-rates 100,200] [--step-secs 10] [--hold-ms 1000]
#          [--quick] [--full-handshakes] [--stunnel-debug info] [--rounds N]
#          [--keep-logs DIR] [--edge target/release/pbx-edge]
#          [--target edge|kamailio] [--kam-children N] [--kam-udp-children N]
#          [--tolerate-failures N]
# --tolerate-failures N: a step with at most N failed calls (and every call ended) does not
# end the ramp (default 0: the first failed call ends it); its failures are still printed.
# --target kamailio replaces the edge by the classic alternative, with the same phones, PBX,
# stunnel and scenarios: Kamailio (TLS on the port stunnel connects to, client certificate
# required and verified against the dev PKI's Snom-style CA, the certificate's CN (the MAC)
# allowed only From/To user 101, record-route, stateful forwarding to the PBX over UDP) and
# rtpengine (userspace, ng protocol over UDP; offer rewritten RTP/SAVP+SDES -> RTP/AVP towards
# the PBX, answer back to RTP/SAVP + a=crypto towards the phone). Its CPU per call is the sum
# over every Kamailio process (the main process and all its children) and rtpengine; RSS is
# their VmRSS sum (shared memory counted once per process) and PSS sum.
# --kam-children sets Kamailio's tcp_children, its TLS workers (default 1: with 4, Debian 12's
# Kamailio 5.6.3 with OpenSSL 3 corrupted its shared memory under this load, "qm_free(): BUG:
# freeing already freed pointer ... tls_init.c", dropped TLS connections and lost a worker to
# SIGSEGV/SIGABRT at 150-200 calls/s; kamailio/kamailio issue 3791, tls_threads_mode in later
# releases). --kam-udp-children sets its UDP workers on the PBX side (default 1: with several,
# the PBX's 180 and 200, sent back to back, are handled by different processes and the 200 can
# overtake the 180 towards the phone, which the phone scenario rejects; the edge's SIP core is
# one task too). The edge binary is still used for
# `dev-pki`. Needs kamailio, kamailio-tls-modules, rtpengine (kamcmd, rtpengine-ctl).
# --rounds N (1..5) runs the phases N times against the same edge process: its RSS after each
# round shows whether memory keeps growing (a leak) or plateaus (allocator high-water mark).
# --keep-logs DIR copies the temporary directory (edge, stunnel and SIPp logs, the generated
# PKI and config) to DIR before deleting it.
# stunnel resumes TLS sessions by default (as phones reconnecting may); --full-handshakes sets
# its sessionResume = no. --stunnel-debug info makes it log, and the summary count, new and
# resumed sessions (costs stunnel CPU).
# Every process it starts is stopped by its PID (also on error and Ctrl-C); temporary files
# live in a mktemp directory that is deleted at exit. Needs: sipp (Debian sip-tester),
# stunnel (stunnel4), curl; builds the edge with `cargo build --release` unless --edge is
# given. Exit status: 0 done and clean (a ramp ending in failures is its expected result),
# 1 set-up failed, 2 usage, 3 a gauge did not return to 0 after a phase, 4 the PBX counted
# failed calls (e.g. its SDP check: the offer must be RTP/AVP without a=crypto).
# Results and how to read them: BENCHMARKS.md, "End-to-end SIP signalling load".
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SCEN=$HERE/sip
# shellcheck source=benches/load/lib.sh
. "$HERE/lib.sh"

PHASES=register,reregister,call
CALL_RATES=10,20,40,60,80,100,130,160,200,250,300,350,400
REG_RATES=20,50,100,150,200,300,400,600
REREG_RATES=100,200,400,800,1200,1600
STEP_SECS=10
HOLD_MS=1000
EDGE_BIN=
STUNNEL_RESUME=yes
STUNNEL_DEBUG=warning
ROUNDS=1
KEEP_LOGS=
MAX_STEP_SECS=60
TARGET=edge
KAM_CHILDREN=1
KAM_UDP_CHILDREN=1
TOLERATE=0

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --phases) PHASES=$2; shift 2 ;;
    --call-rates) CALL_RATES=$2; shift 2 ;;
    --reg-rates) REG_RATES=$2; shift 2 ;;
    --rereg-rates) REREG_RATES=$2; shift 2 ;;
    --step-secs) STEP_SECS=$2; shift 2 ;;
    --hold-ms) HOLD_MS=$2; shift 2 ;;
    --edge) EDGE_BIN=$2; shift 2 ;;
    --full-handshakes) STUNNEL_RESUME=no; shift ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --keep-logs) KEEP_LOGS=$2; shift 2 ;;
    --stunnel-debug) STUNNEL_DEBUG=$2; shift 2 ;;
    --target) TARGET=$2; shift 2 ;;
    --kam-children) KAM_CHILDREN=$2; shift 2 ;;
    --kam-udp-children) KAM_UDP_CHILDREN=$2; shift 2 ;;
    --tolerate-failures) TOLERATE=$2; shift 2 ;;
    --quick) CALL_RATES=5,10; REG_RATES=10,20; REREG_RATES=20,50; STEP_SECS=3; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
case $STEP_SECS in ''|*[!0-9]*) echo "--step-secs needs whole seconds" >&2; exit 2 ;; esac
case $HOLD_MS in ''|*[!0-9]*) echo "--hold-ms needs whole milliseconds" >&2; exit 2 ;; esac
case $ROUNDS in [1-5]) ;; *) echo "--rounds must be 1..5" >&2; exit 2 ;; esac
if [ "$STEP_SECS" -lt 1 ] || [ "$STEP_SECS" -gt "$MAX_STEP_SECS" ]; then
  echo "--step-secs must be 1..$MAX_STEP_SECS" >&2; exit 2
fi
[ "$HOLD_MS" -le 30000 ] || { echo "--hold-ms must be <= 30000" >&2; exit 2; }
case $TARGET in edge|kamailio) ;; *) echo "--target must be edge or kamailio" >&2; exit 2 ;; esac
case $KAM_CHILDREN in [1-9]|[1-3][0-9]) ;; *) echo "--kam-children must be 1..39" >&2; exit 2 ;; esac
case $TOLERATE in ''|*[!0-9]*) echo "--tolerate-failures needs a whole number" >&2; exit 2 ;; esac
case $KAM_UDP_CHILDREN in [1-9]|[1-3][0-9]) ;; *) echo "--kam-udp-children must be 1..39" >&2; exit 2 ;; esac

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

for tool in sipp stunnel curl ss; do
  command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install sip-tester stunnel4 curl iproute2)"
done
if [ "$TARGET" = kamailio ]; then
  for tool in kamailio kamcmd rtpengine rtpengine-ctl openssl; do
    command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install kamailio kamailio-tls-modules rtpengine)"
  done
  KAM_MODULES=$(find /usr/lib /usr/local/lib -path '*/kamailio/modules/tls.so' -print -quit 2>/dev/null)
  [ -n "$KAM_MODULES" ] || die "no Kamailio tls.so module (apt-get install kamailio-tls-modules)"
  KAM_MODULES=$(dirname "$KAM_MODULES")
fi

if [ -z "$EDGE_BIN" ]; then
  log "building the edge: cargo build --release --bin pbx-edge"
  (cd "$ROOT" && cargo build --release --quiet --bin pbx-edge) || die "cargo build failed"
  EDGE_BIN=$ROOT/target/release/pbx-edge
fi
[ -x "$EDGE_BIN" ] || die "no edge binary at $EDGE_BIN"
EDGE_BIN=$(realpath "$EDGE_BIN")

# ---------------------------------------------------------------- processes, by PID only
TMP=$(mktemp -d -t pbx-edge-sip-load.XXXXXX)
# Kamailio forks its workers: list them while it runs, and stop any its main process left
# behind (still named kamailio) by their PIDs.
KAM_KIDS=""
# shellcheck disable=SC2317 # invoked by cleanup
cleanup_before_stop() { if [ -n "${KAM_PID:-}" ]; then KAM_KIDS=$(kam_pids); fi; }
# shellcheck disable=SC2317 # invoked by cleanup
cleanup_after_stop() {
  local i
  for i in $KAM_KIDS; do
    if alive "$i" && [ "$(cat "/proc/$i/comm" 2>/dev/null)" = kamailio ]; then
      kill -KILL "$i" 2>/dev/null || true
    fi
  done
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------- ports, all on 127.0.0.1
TLS_PORT=$(free_port); PBX_LISTEN_PORT=$(free_port); ADMIN_PORT=$(free_port)
STUNNEL_PORT=$(free_port); PBX_PORT=$(free_port); PBX_MEDIA_PORT=$(free_port)
PHONE_MEDIA_PORT=$(free_port)
# The relay's port range (10 000 ports, 2 500 calls of one phone and one PBX RTP/RTCP pair):
# below the kernel's ephemeral range, so nobody else's sockets land there by chance; a port
# the edge cannot bind is skipped by its allocator.
MEDIA_MIN=20000; MEDIA_MAX=29999

# ---------------------------------------------------------------- --target kamailio
# The classic alternative, configured as the edge's equivalent: Kamailio terminates TLS with
# the same server certificate and the same client-certificate rule (required, verified against
# the Snom-style device CA), maps the certificate's CN (the device MAC) to the one SIP user the
# dev inventory gives it, record-routes and forwards statefully to the PBX over UDP; rtpengine
# (userspace only, no kernel module) rewrites RTP/SAVP + SDES on the phone side to RTP/AVP on
# the PBX side and back, and would relay SRTP <-> RTP.
KAM_PID=; RTPE_PID=
kam_pids() { # the Kamailio main process and all its descendants (it forks its workers)
  local todo=("$KAM_PID") out=() p c kids
  while [ ${#todo[@]} -gt 0 ]; do
    p=${todo[0]}; todo=("${todo[@]:1}")
    alive "$p" || continue
    out+=("$p")
    read -r -a kids <<<"$(cat "/proc/$p/task/"*/children 2>/dev/null)" || true
    for c in "${kids[@]}"; do todo+=("$c"); done
  done
  echo "${out[@]}"
}
start_kamailio() {
  local kdir=$TMP/kamailio
  mkdir -p "$kdir/run"
  NG_PORT=$(free_port); CLI_PORT=$(free_port)
  # The same device rule as the edge's inventory (dev-pki: MAC 000413A1B2C3 may use user 101),
  # written into the routing script: Kamailio has no MAC inventory.
  local mac user
  mac=$(awk -F'"' '$1 ~ /^mac = / {print $2; exit}' "$PKI/inventory.toml")
  user=$(awk -F'"' '$1 ~ /^users = / {print $2; exit}' "$PKI/inventory.toml")
  if [ "$mac" != 000413A1B2C3 ] || [ -z "$user" ]; then die "unexpected dev-pki inventory ($mac, $user)"; fi
  cat >"$kdir/tls.cfg" <<EOF
# Written by benches/load/sip_load.sh: the edge's [tls] section, for Kamailio's tls module.
[server:default]
method = TLSv1.2+
certificate = $PKI/sbc.test-chain.crt
private_key = $PKI/sbc.test.key
ca_list = $PKI/snom-ca.crt
require_certificate = yes
verify_certificate = yes
verify_depth = 3
EOF
  cat >"$kdir/kamailio.cfg" <<EOF
#!KAMAILIO
# Written by benches/load/sip_load.sh --target kamailio: the equivalent of the edge's config.
debug=1
log_stderror=yes
memdbg=5
memlog=5
children=$KAM_UDP_CHILDREN
tcp_children=$KAM_CHILDREN
enable_tls=yes
listen=tls:127.0.0.1:$TLS_PORT
listen=udp:127.0.0.1:$PBX_LISTEN_PORT
alias="sbc.test"
auto_aliases=no
dns=no
rev_dns=no
use_dns_cache=off
# SIPp opens one TCP (so TLS) connection per call, up to ~2 000 at once in the 20 s hold run.
tcp_max_connections=16384
tls_max_connections=16384
open_files_limit=20000
tcp_connection_lifetime=3605
mpath="$KAM_MODULES/"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "ctl.so"
loadmodule "tls.so"
loadmodule "rtpengine.so"
modparam("tls", "config", "$kdir/tls.cfg")
modparam("tls", "session_cache", 1)
modparam("ctl", "binrpc", "unix:$kdir/run/kamailio_ctl")
modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:$NG_PORT")

request_route {
	if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
	if (has_totag()) {
		# In-dialog (ACK, BYE) from either side, along the recorded route.
		if (loose_route()) {
			if (is_method("BYE")) { rtpengine_delete(); }
			if (is_method("ACK")) { t_relay(); exit; }
			if (!t_relay()) { sl_reply_error(); }
			exit;
		}
		if (is_method("ACK")) { if (t_check_trans()) { t_relay(); } exit; }
		sl_send_reply("404", "Not here");
		exit;
	}
	if (is_method("CANCEL")) {
		if (t_check_trans()) { rtpengine_delete(); t_relay(); }
		exit;
	}
	# Absorb retransmissions of requests already in a transaction.
	if (!t_newtran()) { sl_reply_error(); exit; }
	# Phones: TLS with a certificate the tls module verified against the device CA; the
	# certificate's CN is the MAC, and that MAC may use one SIP user (the edge's inventory).
	if (\$pr != "tls" || !\$tls_peer_verified) { t_reply("403", "Device certificate required"); exit; }
	if (\$tls_peer_subject_cn != "$mac" || \$fU != "$user") {
		t_reply("403", "User not allowed for this device");
		exit;
	}
	if (is_method("REGISTER") && \$tU != "$user") { t_reply("403", "User not allowed for this device"); exit; }
	if (is_method("INVITE")) {
		record_route();
		if (has_body("application/sdp")) {
			if (!rtpengine_offer("RTP/AVP replace-origin replace-session-connection")) {
				t_reply("503", "Media relay unavailable");
				exit;
			}
		}
		t_on_reply("PBX_REPLY");
		t_on_failure("PBX_FAILURE");
	}
	\$du = "sip:127.0.0.1:$PBX_PORT;transport=udp";
	if (!t_relay()) { sl_reply_error(); }
	exit;
}

onreply_route[PBX_REPLY] {
	if (status =~ "^(18[03]|2[0-9][0-9])" && has_body("application/sdp")) {
		rtpengine_answer("RTP/SAVP replace-origin replace-session-connection");
	}
}

failure_route[PBX_FAILURE] {
	rtpengine_delete();
}
EOF
  kamailio -c -f "$kdir/kamailio.cfg" -Y "$kdir/run" >"$kdir/check.log" 2>&1 \
    || { tail -20 "$kdir/check.log" >&2; die "kamailio -c refused the generated config"; }
  # rtpengine: userspace only (--table=-1), no config file, ports in the edge's media range.
  # No delete delay: a call's ports go back when Kamailio deletes it (BYE), as the edge's do.
  start rtpengine "$TMP" rtpengine --config-file=none --foreground --log-stderr --log-level=4 \
    --table=-1 --interface=127.0.0.1 --listen-ng="127.0.0.1:$NG_PORT" \
    --listen-cli="127.0.0.1:$CLI_PORT" --port-min="$MEDIA_MIN" --port-max="$MEDIA_MAX" \
    --delete-delay=0 --timeout=60 --pidfile="$kdir/run/rtpengine.pid"
  RTPE_PID=$LAST_PID
  wait_port udp "$NG_PORT" 10 || { tail -20 "$TMP/rtpengine.log" >&2; die "rtpengine did not listen"; }
  # -DD: the main process stays in the foreground (our PID) and forks the workers; -E logs to
  # stderr. 256 MB shared memory (transactions of ~2 000 concurrent calls), 16 MB per process.
  start kamailio "$TMP" kamailio -DD -E -f "$kdir/kamailio.cfg" -Y "$kdir/run" -m 256 -M 16
  KAM_PID=$LAST_PID
  wait_port tcp "$TLS_PORT" 10 || { tail -20 "$TMP/kamailio.log" >&2; die "kamailio did not listen"; }
  local i
  for i in $(seq 1 50); do
    kamcmd -s "unix:$kdir/run/kamailio_ctl" core.uptime >/dev/null 2>&1 && break
    alive "$KAM_PID" || { tail -20 "$TMP/kamailio.log" >&2; die "kamailio exited"; }
    sleep 0.1
  done
  # The client-certificate rule, checked before the load: an OPTIONS from user 102 with the
  # Snom-style certificate (MAC of user 101) gets 403; without a certificate, or with the
  # Yealink-style one (another CA), nothing answers (the TLS handshake is refused).
  # Checked against a first Kamailio with the same config, then stopped: Debian 12's Kamailio
  # 5.6.3 with OpenSSL 3 was seen to double-free in its tls module after a refused handshake
  # ("qm_free(): BUG: freeing already freed pointer ... tls_init.c: ser_free"), then to drop
  # TLS connections and lose a worker to SIGSEGV under load. The load runs on a fresh one.
  local a b c
  a=$(tls_probe "$PKI/snom-000413A1B2C3.pem" 102); b=$(tls_probe "" 102)
  c=$(tls_probe "$PKI/yealink-805EC0D4E5F6.pem" 102)
  case "$a|$b|$c" in
    "SIP/2.0 403 "*"|-|-") log "kamailio client-certificate check: wrong user -> ${a%$'\r'}; no certificate -> no answer; other vendor's CA -> no answer" ;;
    *) die "kamailio client-certificate check failed: [$a] [$b] [$c]" ;;
  esac
  stop_pid "$KAM_PID" kamailio
  mv "$TMP/kamailio.log" "$TMP/kamailio-certcheck.log"
  for i in $(seq 1 50); do port_used "$TLS_PORT" || break; sleep 0.1; done
  start kamailio "$TMP" kamailio -DD -E -f "$kdir/kamailio.cfg" -Y "$kdir/run" -m 256 -M 16
  KAM_PID=$LAST_PID
  wait_port tcp "$TLS_PORT" 10 || { tail -20 "$TMP/kamailio.log" >&2; die "kamailio did not listen"; }
  for i in $(seq 1 50); do
    kamcmd -s "unix:$kdir/run/kamailio_ctl" core.uptime >/dev/null 2>&1 && break
    alive "$KAM_PID" || { tail -20 "$TMP/kamailio.log" >&2; die "kamailio exited"; }
    sleep 0.1
  done
  log "kamailio pid $KAM_PID ($(kam_pids | wc -w) processes) ready: tls 127.0.0.1:$TLS_PORT, pbx side udp 127.0.0.1:$PBX_LISTEN_PORT; rtpengine pid $RTPE_PID, ng 127.0.0.1:$NG_PORT"
}
tls_probe() { # CERT|"" USER: the status line Kamailio answers to an OPTIONS over TLS, or "-"
  local args=(-connect "127.0.0.1:$TLS_PORT" -servername sbc.test -CAfile "$PKI/server-ca.crt" -quiet) line
  if [ -n "$1" ]; then args+=(-cert "$1"); fi
  line=$({ printf 'OPTIONS sip:sbc.test SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKprobe%s\r\nFrom: <sip:%s@sbc.test>;tag=probe\r\nTo: <sip:sbc.test>\r\nCall-ID: probe-%s@sbc.test\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n' "$RANDOM" "$2" "$RANDOM"; sleep 1; } \
    | timeout 5 openssl s_client "${args[@]}" 2>/dev/null | head -1) || true
  echo "${line:--}"
}
kam_ctl() { kamcmd -s "unix:$TMP/kamailio/run/kamailio_ctl" "$@" 2>/dev/null || true; }
rtpe_sessions() { # rtpengine's "Current sessions own: N" (0 if it does not answer)
  { rtpengine-ctl -ip 127.0.0.1 -port "$CLI_PORT" list numsessions 2>/dev/null || true; } \
    | awk '/[Cc]urrent sessions own/ {print $NF; f = 1} END {if (!f) print "?"}'
}

# ---------------------------------------------------------------- PKI, config, peers
log "temporary directory $TMP"
"$EDGE_BIN" dev-pki --out "$TMP/pki" --name sbc.test >"$TMP/dev-pki.log" 2>&1 \
  || { cat "$TMP/dev-pki.log" >&2; die "pbx-edge dev-pki failed"; }
PKI=$TMP/pki
# dev-pki's inventory: MAC 000413A1B2C3 (the Snom-style device) may use SIP user 101.
CONFIG=$PKI/load.toml
write_edge_config "$CONFIG" benches/load/sip_load.sh "" ""
"$EDGE_BIN" check-config --config "$CONFIG" >"$TMP/check-config.log" 2>&1 \
  || { cat "$TMP/check-config.log" >&2; die "generated config refused"; }

write_stunnel_conf "$TMP/stunnel.conf" "$STUNNEL_DEBUG" "sessionResume = $STUNNEL_RESUME"

if [ "$TARGET" = edge ]; then
  start edge "$TMP" "$EDGE_BIN" run --config "$CONFIG"
  EDGE_PID=$LAST_PID
  ADMIN=http://127.0.0.1:$ADMIN_PORT
  wait_edge_ready "$EDGE_PID" "$TMP/edge.log"
  log "edge pid $EDGE_PID ready: tls 127.0.0.1:$TLS_PORT, pbx side 127.0.0.1:$PBX_LISTEN_PORT, admin $ADMIN"
else
  start_kamailio
fi
start stunnel "$TMP" stunnel "$TMP/stunnel.conf"
STUNNEL_PID=$LAST_PID
wait_port tcp "$STUNNEL_PORT" 10 || { cat "$TMP/stunnel.log" >&2; die "stunnel did not listen"; }
log "stunnel pid $STUNNEL_PID on 127.0.0.1:$STUNNEL_PORT"

# ---------------------------------------------------------------- measuring
HZ=$(getconf CLK_TCK)
cpu_ticks() { # PID: utime+stime in clock ticks (fields 14, 15; after the ")" of comm)
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  s=${s##*) }
  # shellcheck disable=SC2086
  set -- $s
  echo $((${12} + ${13}))
}
machine_ticks() { # "busy total" over all CPUs from /proc/stat
  local _cpu user nice sys idle iowait irq softirq steal _rest
  read -r _cpu user nice sys idle iowait irq softirq steal _rest </proc/stat
  echo "$((user + nice + sys + irq + softirq + steal)) $((user + nice + sys + idle + iowait + irq + softirq + steal))"
}
udp_rcvbuf_errors() { # the namespace's UDP receive-buffer drops so far (/proc/net/snmp)
  awk '$1 == "Udp:" { if (!h) { for (i = 2; i <= NF; i++) col[$i] = i; h = 1 } else print $(col["RcvbufErrors"]) }' /proc/net/snmp
}
rss_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
pss_kb() { awk '$1 == "Pss:" {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
# The system under test: the edge's one process, or every Kamailio process plus rtpengine.
sut_ticks() {
  if [ "$TARGET" = edge ]; then cpu_ticks "$EDGE_PID"; return; fi
  local p t=0
  for p in $(kam_pids) "$RTPE_PID"; do t=$((t + $(cpu_ticks "$p"))); done
  echo "$t"
}
sut_rss_kb() { # edge: VmRSS; kamailio: VmRSS summed over its processes and rtpengine
  if [ "$TARGET" = edge ]; then rss_kb "$EDGE_PID" VmRSS; return; fi
  local p t=0 k
  for p in $(kam_pids) "$RTPE_PID"; do k=$(rss_kb "$p" VmRSS); t=$((t + ${k:-0})); done
  echo "$t"
}
kam_detail() { # "kamailio: N processes, CPU ticks, RSS sum kB, PSS sum kB; rtpengine: ticks, RSS, PSS"
  local p n=0 t=0 r=0 s=0 k
  for p in $(kam_pids); do
    n=$((n + 1)); t=$((t + $(cpu_ticks "$p")))
    k=$(rss_kb "$p" VmRSS); r=$((r + ${k:-0})); k=$(pss_kb "$p"); s=$((s + ${k:-0}))
  done
  echo "$n $t $r $s $(cpu_ticks "$RTPE_PID") $(rss_kb "$RTPE_PID" VmRSS) $(pss_kb "$RTPE_PID")"
}
now_ms() { date +%s%3N; }
pct() { awk -v t="$1" -v w="$2" 'BEGIN { if (w > 0) printf "%.0f", 100 * t / w; else print "-" }'; }
metric() { # NAME[{labels}] from a saved /metrics text: the value, 0 if absent
  awk -v n="$1" '$1 == n {print $2; f = 1} END {if (!f) print 0}' "$2"
}
metric_sum() { # NAME: sum over every label set
  awk -v n="$1" 'index($1, n "{") == 1 || $1 == n {s += $2} END {print s + 0}' "$2"
}

# Percentiles of SIPp's -trace_rtt file(s) (lines "date_ms;rtt_ms;rtd_no"); prints
# "count p50 p95 p99 max first_ms last_ms", with "-" when empty.
rtt_stats() {
  cat "$@" 2>/dev/null | awk -F';' '$2 ~ /^[0-9.]+$/ {print $1, $2}' | sort -k2,2g \
    | awk '{ t[NR] = $1; v[NR] = $2; if (NR == 1 || $1 < lo) lo = $1; if ($1 > hi) hi = $1 }
      END {
        if (NR == 0) { print "0 - - - - 0 0"; exit }
        i50 = int(0.50 * NR + 0.999); i95 = int(0.95 * NR + 0.999); i99 = int(0.99 * NR + 0.999)
        printf "%d %.1f %.1f %.1f %.1f %.0f %.0f\n", NR, v[i50], v[i95], v[i99], v[NR], lo, hi
      }'
}
screen_count() { # "Successful call" | "Failed call" from a SIPp -trace_screen file (cumulative)
  [ -f "$2" ] || { echo 0; return; }
  awk -F'|' -v k="$1" '{ sub(/^ +/, "", $1) } index($1, k) == 1 { v = $3; gsub(/[^0-9]/, "", v); n = v } END { print n + 0 }' "$2" 2>/dev/null
}

ROUND=1
LAST_RC=0
SUMMARY=$TMP/summary.txt
: >"$SUMMARY"
row() { printf '%-8s %6s %6s %6s %5s %8s %6s %6s %6s %6s %8s %6s %5s %5s %5s %5s %5s %4s\n' "$@" | tee -a "$SUMMARY"; }

# run_phase NAME UAC_SCENARIO UAS_SCENARIO RATES TRANSPORT(tn: a connection per call | t1: one)
run_phase() {
  local phase=$1 uac_xml=$2 uas_xml=$3 rates=$4 transport=$5
  local total=0 r steps
  IFS=, read -r -a steps <<<"$rates"
  for r in "${steps[@]}"; do total=$((total + r * STEP_SECS)); done
  local pdir=$TMP/r$ROUND-$phase
  mkdir -p "$pdir"
  # The PBX: one SIPp for the whole phase, bounded by -m (every call of the ramp) and -timeout.
  # -m is 3x the phones' calls plus margin: a PBX that stops at -m while the edge still sends
  # (retransmissions, an overloaded step) would turn into timeouts that are SIPp's, not ours.
  local pbx_limit=$(( ${#steps[@]} * (STEP_SECS + HOLD_MS / 1000 + 40) + 30 ))
  start sipp-pbx "$pdir" sipp -sf "$uas_xml" -t u1 -i 127.0.0.1 -p "$PBX_PORT" \
    -mi 127.0.0.1 -mp "$PBX_MEDIA_PORT" -m $((3 * total + 1000)) -l 100000 -timeout "${pbx_limit}s" -nostdin -timer_resol 1 \
    -trace_err -error_file "$pdir/pbx-errors.log" -trace_screen -screen_file "$pdir/pbx-screen.log"
  local pbx_pid=$LAST_PID
  wait_port udp "$PBX_PORT" 10 || { cat "$pdir/sipp-pbx.log" >&2; die "SIPp (PBX) did not bind udp $PBX_PORT"; }

  echo | tee -a "$SUMMARY"
  local what="one TLS connection per REGISTER"
  if [ "$phase" = call ]; then what="one TLS connection per call"; fi
  if [ "$transport" = t1 ]; then what="one TLS connection for the whole step"; fi
  echo "== $phase: $STEP_SECS s per step$([ "$phase" = call ] && echo ", hold $HOLD_MS ms"), $what" | tee -a "$SUMMARY"
  local sut=edge
  if [ "$TARGET" = kamailio ]; then sut="k+r"; fi
  row step "asked" "calls" "ok" "fail" "ok/s" "p50ms" "p95ms" "p99ms" "maxms" "${sut}CPU" "${sut}%" "stun%" "uac%" "pbx%" "mach%" "RSSMB" "rc"
  row "" "/s" "" "" "" "answered" "" "" "" "" "ms/call" "" "" "" "" "" "" ""
  local i=0 stop_reason="ramp finished"
  for r in "${steps[@]}"; do
    i=$((i + 1))
    local sdir=$pdir/step$i calls=$((r * STEP_SECS))
    mkdir -p "$sdir"
    local e0 s0 p0 m0 t0 e1 s1 p1 m1 t1 u1=0
    e0=$(sut_ticks); s0=$(cpu_ticks "$STUNNEL_PID"); p0=$(cpu_ticks "$pbx_pid")
    local k0=""
    if [ "$TARGET" = kamailio ]; then k0=$(kam_detail); fi
    m0=$(machine_ticks); t0=$(now_ms)
    local q0; q0=$(udp_rcvbuf_errors)
    local limit=$((calls + 50))
    local bound=$((STEP_SECS + HOLD_MS / 1000 + 30))
    start sipp-uac "$sdir" sipp -sf "$uac_xml" -s 200 -t "$transport" -i 127.0.0.1 \
      -mi 127.0.0.1 -mp "$PHONE_MEDIA_PORT" -r "$r" -m "$calls" -l "$limit" -d "$HOLD_MS" \
      -timeout "${bound}s" -timeout_error -nostdin -max_socket 4000 -timer_resol 1 \
      -trace_rtt -rtt_freq 1 -trace_err -error_file "$sdir/uac-errors.log" \
      -trace_screen -screen_file "$sdir/uac-screen.log" "127.0.0.1:$STUNNEL_PORT"
    local uac_pid=$LAST_PID
    local deadline=$(($(now_ms) + (bound + 10) * 1000))
    while alive "$uac_pid" && [ "$(now_ms)" -lt "$deadline" ]; do
      local u; u=$(cpu_ticks "$uac_pid")
      if [ "$u" -gt 0 ]; then u1=$u; fi
      sleep 0.2
    done
    stop_pid "$uac_pid" sipp-uac
    local uac_rc=$LAST_RC
    e1=$(sut_ticks); s1=$(cpu_ticks "$STUNNEL_PID"); p1=$(cpu_ticks "$pbx_pid")
    local k1=""
    if [ "$TARGET" = kamailio ]; then k1=$(kam_detail); fi
    m1=$(machine_ticks); t1=$(now_ms)
    local q1; q1=$(udp_rcvbuf_errors)
    local ok fail
    ok=$(screen_count "Successful call" "$sdir/uac-screen.log")
    fail=$(screen_count "Failed call" "$sdir/uac-screen.log")
    local n p50 p95 p99 mx lo hi
    read -r n p50 p95 p99 mx lo hi < <(rtt_stats "$sdir"/*_rtt.csv)
    # Answered calls per second: 200 OKs over the span between the first and the last.
    local rate_ok
    rate_ok=$(awk -v n="$n" -v lo="$lo" -v hi="$hi" 'BEGIN { if (n > 1 && hi > lo) printf "%.1f", (n - 1) * 1000 / (hi - lo); else print "-" }')
    local wall=$((t1 - t0)) de=$((e1 - e0))
    local edge_ms_call
    edge_ms_call=$(awk -v d="$de" -v hz="$HZ" -v n="$ok" 'BEGIN { if (n > 0) printf "%.3f", d * 1000 / hz / n; else print "-" }')
    local wall_ticks=$((wall * HZ / 1000))
    local mb mt me
    read -r mb mt <<<"$m1"; read -r me _ <<<"$m0"
    local mach
    mach=$(pct "$((mb - me))" "$((mt - ${m0#* }))")
    local rss
    rss=$(awk -v k="$(sut_rss_kb)" 'BEGIN { printf "%.1f", k / 1024 }')
    row "$i" "$r" "$calls" "$ok" "$fail" "$rate_ok" "$p50" "$p95" "$p99" "$mx" "$edge_ms_call" \
      "$(pct "$de" "$wall_ticks")" "$(pct "$((s1 - s0))" "$wall_ticks")" "$(pct "$u1" "$wall_ticks")" \
      "$(pct "$((p1 - p0))" "$wall_ticks")" "$mach" "$rss" "$uac_rc"
    if [ "$TARGET" = kamailio ]; then
      # shellcheck disable=SC2086
      set -- $k0 $k1
      if [ "$8" -lt "$1" ]; then echo "   kamailio processes exited during the step ($1 -> $8): split not meaningful" | tee -a "$SUMMARY"; else
      awk -v hz="$HZ" -v w="$wall_ticks" -v ok="$ok" -v n="$8" -v kt="$(($9 - $2))" -v kr="${10}" -v ks="${11}" \
        -v rt="$((${12} - $5))" -v rr="${13}" -v rs="${14}" 'BEGIN {
          c = (ok > 0) ? ok : 1
          printf "   split: kamailio (%d processes) %.3f ms/call %.0f%% RSS sum %.1f MB PSS sum %.1f MB; rtpengine %.3f ms/call %.0f%% RSS %.1f MB PSS %.1f MB\n",
            n, kt * 1000 / hz / c, (w > 0 ? 100 * kt / w : 0), kr / 1024, ks / 1024, rt * 1000 / hz / c, (w > 0 ? 100 * rt / w : 0), rr / 1024, rs / 1024
        }' | tee -a "$SUMMARY"
      fi
    fi
    echo "r$ROUND $phase step $i: load average $(cut -d' ' -f1-3 /proc/loadavg), wall $((wall / 1000)).$((wall % 1000 / 100)) s, UDP receive-buffer drops (whole machine) $((q1 - q0))" >>"$TMP/loadavg.txt"
    if [ "$fail" -gt 0 ] || [ "$ok" -lt "$calls" ]; then
      local ended=yes
      if [ "$fail" -le "$TOLERATE" ] && [ "$((ok + fail))" -ge "$calls" ]; then ended=no; fi
      stop_reason="step $i: $fail failed / $ok of $calls successful"
      echo "-- $phase step $i failures; SIPp (phones) errors, first lines:" | tee -a "$SUMMARY"
      grep -v '^$' "$sdir/uac-errors.log" 2>/dev/null | head -8 | tee -a "$SUMMARY" || true
      echo "-- SIPp (PBX) errors so far, first lines:" | tee -a "$SUMMARY"
      grep -v '^$' "$pdir/pbx-errors.log" 2>/dev/null | head -8 | tee -a "$SUMMARY" || true
      if [ "$TARGET" = edge ]; then
        echo "-- edge WARN/ERROR lines (first 8):" | tee -a "$SUMMARY"
        grep -E 'WARN|ERROR' "$TMP/edge.log" | head -8 | tee -a "$SUMMARY" || true
      else
        echo "-- kamailio / rtpengine ERROR and WARNING lines (last 8 each):" | tee -a "$SUMMARY"
        grep -E 'ERROR|WARNING|CRITICAL' "$TMP/kamailio.log" | tail -8 | tee -a "$SUMMARY" || true
        grep -E 'ERR|WARN|CRIT' "$TMP/rtpengine.log" | tail -8 | tee -a "$SUMMARY" || true
      fi
      if [ "$ended" = yes ]; then break; fi
      echo "-- $phase step $i: $fail failed call(s) tolerated (--tolerate-failures $TOLERATE), ramp goes on" | tee -a "$SUMMARY"
      stop_reason="ramp finished (failed calls tolerated)"
    fi
    # SIPp could not start calls at the asked rate: the 2 cores are the limit, not the edge.
    if [ "$rate_ok" != "-" ] && awk -v a="$rate_ok" -v r="$r" 'BEGIN { exit !(a < 0.85 * r) }'; then
      stop_reason="step $i: answered $rate_ok calls/s of $r asked (machine saturated)"
      break
    fi
  done
  echo "-- $phase ramp ended: $stop_reason" | tee -a "$SUMMARY"
  # The PBX SIPp ends by itself after -m calls; otherwise ask it (USR1), then by PID.
  if alive "$pbx_pid"; then kill -USR1 "$pbx_pid" 2>/dev/null || true; fi
  for _ in $(seq 1 30); do
    if ! alive "$pbx_pid"; then break; fi
    sleep 0.1
  done
  stop_pid "$pbx_pid" sipp-pbx
  # The PBX's own checks (the offer it receives is RTP/AVP without a=crypto): SIPp marks such a
  # call failed on its side and records "Failed regexp match", while the phone side may still
  # see the call succeed. So they are counted here, from the PBX's final statistics screen.
  local pbx_ok pbx_fail pbx_re
  pbx_ok=$(screen_count "Successful call" "$pdir/sipp-pbx.log")
  pbx_fail=$(screen_count "Failed call" "$pdir/sipp-pbx.log")
  pbx_re=$(grep -c 'Failed regexp match' "$pdir/pbx-errors.log" 2>/dev/null) || true
  local pbx_verdict="PBX CHECKS OK"
  if [ "$pbx_fail" -gt 0 ] || [ "${pbx_re:-0}" -gt 0 ]; then pbx_verdict="PBX CHECKS FAILED"; fi
  echo "-- $phase: $pbx_verdict: SIPp (PBX) $pbx_ok successful, $pbx_fail failed calls, ${pbx_re:-0} failed regexp checks" | tee -a "$SUMMARY"
  if [ "$TARGET" = edge ]; then check_clean "$phase"; else check_clean_kamailio "$phase"; fi
}

# After a phase: /api/calls empty and the gauges back to 0. Bounded wait of 100 s: RFC 3261
# timers keep transactions after their last message (Timer L/M 32 s after an INVITE's 2xx,
# Timer F 32 s for an unanswered BYE, then Timer H 32 s for the 408 sent back), so after an
# overloaded step the last ones can take over 64 s to go.
check_clean() {
  local phase=$1 m=$TMP/metrics-r$ROUND-$1.txt calls gauges i t0
  local names="pbx_edge_calls_active pbx_edge_sip_transactions_active pbx_edge_media_active_streams pbx_edge_media_ports_in_use pbx_edge_tls_connections_active pbx_edge_registrations_active"
  t0=$(now_ms)
  for i in $(seq 1 200); do
    curl -fsS --max-time 2 "$ADMIN/metrics" >"$m" 2>/dev/null || true
    calls=$(curl -fsS --max-time 2 "$ADMIN/api/calls" 2>/dev/null || echo '?')
    gauges=""
    local n
    for n in $names; do gauges+="${n#pbx_edge_}=$(metric "$n" "$m") "; done
    if [ "$calls" = '{"calls":[]}' ] && ! grep -Eq '=[1-9]' <<<"$gauges"; then break; fi
    if [ "$i" = 1 ]; then echo "-- $phase right after the ramp: /api/calls=$(head -c 100 <<<"$calls") $gauges" | tee -a "$SUMMARY"; fi
    sleep 0.5
  done
  local verdict="CLEAN after $(( ($(now_ms) - t0) / 1000 )) s"
  { [ "$calls" = '{"calls":[]}' ] && ! grep -Eq '=[1-9]' <<<"$gauges"; } || verdict="NOT CLEAN after 100 s"
  {
    echo "-- $phase after the ramp: $verdict: /api/calls=$(head -c 200 <<<"$calls") $gauges"
    echo "-- edge RSS now $(rss_kb "$EDGE_PID" VmRSS) kB, peak (VmHWM) $(rss_kb "$EDGE_PID" VmHWM) kB"
    echo "-- edge counters so far: handshakes=$(metric_sum pbx_edge_tls_handshakes_total "$m") handshake_failures=$(metric_sum pbx_edge_tls_handshake_failures_total "$m") txn_timeouts: $(grep '^pbx_edge_sip_transaction_timeouts_total{' "$m" | sed 's/pbx_edge_sip_transaction_timeouts_total//' | tr '\n' ' ')"
    echo "   calls_total: $(grep '^pbx_edge_calls_total{' "$m" | sed 's/pbx_edge_calls_total//' | tr '\n' ' ')"
    echo "   responses:   $(grep '^pbx_edge_sip_responses_total{' "$m" | sed 's/pbx_edge_sip_responses_total//' | tr '\n' ' ')"
  } | tee -a "$SUMMARY"
}

# --target kamailio, after a phase: no transaction left in tm, no rtpengine session, and
# Kamailio's TLS connections closed; same bounded wait (100 s) as check_clean.
check_clean_kamailio() {
  local phase=$1 tmc sess conns i t0 state=""
  t0=$(now_ms)
  if ! alive "$KAM_PID"; then
    echo "-- $phase after the ramp: NOT CLEAN: kamailio (pid $KAM_PID) exited; its log:" | tee -a "$SUMMARY"
    grep -E 'CRITICAL|ALERT|BUG' "$TMP/kamailio.log" | tail -8 | tee -a "$SUMMARY" || true
    return 0
  fi
  for i in $(seq 1 200); do
    tmc=$(kam_ctl tm.stats | awk '$1 == "current:" {print $2; f = 1} END {if (!f) print "?"}')
    sess=$(rtpe_sessions)
    conns=$(kam_ctl tls.info | awk '$1 == "opened_connections:" {print $2; f = 1} END {if (!f) print "?"}')
    state="tm_current=$tmc rtpengine_sessions=$sess tls_connections=$conns"
    if [ "$tmc" = 0 ] && [ "$sess" = 0 ] && [ "$conns" = 0 ]; then break; fi
    if [ "$i" = 1 ]; then echo "-- $phase right after the ramp: $state" | tee -a "$SUMMARY"; fi
    sleep 0.5
  done
  local verdict="CLEAN after $(( ($(now_ms) - t0) / 1000 )) s"
  { [ "$tmc" = 0 ] && [ "$sess" = 0 ] && [ "$conns" = 0 ]; } || verdict="NOT CLEAN after 100 s"
  local d; d=$(kam_detail)
  # shellcheck disable=SC2086
  set -- $d
  {
    echo "-- $phase after the ramp: $verdict: $state"
    echo "-- kamailio $1 processes: RSS sum $3 kB, PSS sum $4 kB; rtpengine RSS $6 kB, PSS $7 kB, peak (VmHWM) $(rss_kb "$RTPE_PID" VmHWM) kB"
    echo "-- kamailio tm: $(kam_ctl tm.stats | tr -s ' \n' ' ')"
    echo "-- kamailio sl: $(kam_ctl sl.stats | tr -s ' \n' ' ')"
  } | tee -a "$SUMMARY"
}

if [ "$TARGET" = edge ]; then
  log "edge RSS at start: $(rss_kb "$EDGE_PID" VmRSS) kB"
else
  log "kamailio + rtpengine RSS sum at start: $(sut_rss_kb) kB"
fi
IFS=, read -r -a WANT <<<"$PHASES"
for round in $(seq 1 "$ROUNDS"); do
ROUND=$round
if [ "$ROUNDS" -gt 1 ]; then printf '\n#### round %s of %s (same %s process)\n' "$round" "$ROUNDS" "$([ "$TARGET" = edge ] && echo edge || echo 'kamailio + rtpengine')" | tee -a "$SUMMARY"; fi
for ph in "${WANT[@]}"; do
  case $ph in
    register) run_phase register "$SCEN/phone-register.xml" "$SCEN/pbx-registrar.xml" "$REG_RATES" tn ;;
    reregister) run_phase reregister "$SCEN/phone-register.xml" "$SCEN/pbx-registrar.xml" "$REREG_RATES" t1 ;;
    call) run_phase call "$SCEN/phone-call.xml" "$SCEN/pbx-call.xml" "$CALL_RATES" tn ;;
    *) die "unknown phase $ph (register, reregister, call)" ;;
  esac
done
done

{
  echo
  echo "Columns: asked = SIPp -r; calls = -m for the step; ok/fail = SIPp's successful/failed calls;"
  echo "ok/s = answered calls per second (200 OKs over the span from the first to the last);"
  echo "pNNms = SIPp response time, request sent -> 200 received, new TLS connection included;"
  echo "edgeCPU = edge utime+stime per successful call; edge%/stun%/uac%/pbx% = CPU of the edge,"
  echo "stunnel, SIPp phones and SIPp PBX over the step's wall time (100 = one core); mach% = all"
  echo "CPUs busy (whole machine, shared); RSSMB = edge VmRSS at the end of the step; rc = SIPp"
  echo "(phones) exit status: 0 every call succeeded, 1 some failed, other: stopped early (its"
  echo "-timeout: then ok/fail are not final and ok/s counts the 200 OKs it did receive)."
  if [ "$TARGET" = kamailio ]; then
    echo "--target kamailio: k+rCPU, k+r% and RSSMB stand for the edge's columns: the sum over every"
    echo "Kamailio process ($KAM_UDP_CHILDREN UDP children, $KAM_CHILDREN tcp_children) and rtpengine. RSS sums count"
    echo "Kamailio's shared memory once per process; the split line also gives PSS sums."
    echo "$(kamailio -v 2>&1 | head -1 | sed "s/^version: //"); rtpengine $(rtpengine --version 2>&1 | head -1 | sed "s/^Version: //")"
  fi
  echo "stunnel: sessionResume = $STUNNEL_RESUME$( [ "$STUNNEL_DEBUG" = info ] && printf '; TLS sessions: %s new, %s resumed' "$(grep -c 'new session negotiated' "$TMP/stunnel.log")" "$(grep -c 'previous session reused' "$TMP/stunnel.log")")"
  echo "Load average at the end of each step, and UDP datagrams the kernel dropped for a full"
  echo "receive buffer during it (/proc/net/snmp RcvbufErrors: any process on the machine):"
  cat "$TMP/loadavg.txt"
  echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
} | tee -a "$SUMMARY"
grep -q 'NOT CLEAN' "$SUMMARY" && exit 3
grep -q 'PBX CHECKS FAILED' "$SUMMARY" && exit 4
exit 0
