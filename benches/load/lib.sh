# Shared by benches/load/sip_load.sh and benches/load/soak.sh (sourced, not run): processes
# started and stopped by PID only, free loopback ports, the edge's generated config, the
# stunnel client that gives SIPp its TLS + device certificate, and the wait for the edge's
# readiness. Callers define log, die, TMP and KEEP_LOGS, and the port variables used below.

# ---------------------------------------------------------------- processes, by PID only
PIDS=() # "pid:name" of every process started and not yet reaped
alive() { # PID: running (a zombie, exited but not yet reaped, is not)
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }
  [ "${s%% *}" != Z ]
}
forget() { # PID: reaped, so the number may belong to someone else from now on
  local i
  for i in "${!PIDS[@]}"; do
    if [ "${PIDS[i]%%:*}" = "$1" ]; then unset 'PIDS[i]'; fi
  done
  PIDS=("${PIDS[@]}")
}
stop_pid() { # PID NAME: TERM, up to 5 s, then KILL, then reap. Only PIDs this script started.
  local pid=$1 name=$2 i
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      log "$name (pid $pid) ignored TERM: KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  LAST_RC=0
  wait "$pid" 2>/dev/null || LAST_RC=$?
  forget "$pid"
}
# Stops every process started (newest first), keeps the logs if asked, removes $TMP. A caller
# may define cleanup_before_stop / cleanup_after_stop (e.g. to list and reap forked workers).
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  if declare -F cleanup_before_stop >/dev/null; then cleanup_before_stop; fi
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    stop_pid "${PIDS[i]%%:*}" "${PIDS[i]#*:}"
  done
  if declare -F cleanup_after_stop >/dev/null; then cleanup_after_stop; fi
  if [ -n "$KEEP_LOGS" ]; then
    mkdir -p "$KEEP_LOGS" && cp -r "$TMP"/. "$KEEP_LOGS"/ && log "logs copied to $KEEP_LOGS"
  fi
  rm -rf "$TMP"
  exit "$rc"
}
# start NAME DIR CMD...: runs CMD in DIR in the background, output in DIR/NAME.log.
start() {
  local name=$1 dir=$2
  shift 2
  (cd "$dir" && exec "$@") >"$dir/$name.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID:$name")
}

# ---------------------------------------------------------------- ports, all on 127.0.0.1
port_used() { ss -H -tuan "sport = :$1" 2>/dev/null | grep -q .; }
TAKEN=" "
# free_port [SPAN]: a port in 15000..19999 nobody uses (TCP or UDP) and not handed out before;
# with SPAN > 1 an even port whose next SPAN-1 ports are free too (an RTP/RTCP pair or two).
free_port() {
  local span=${1:-1} p i j ok
  for i in $(seq 1 200); do
    if [ "$span" -gt 1 ]; then p=$((15000 + (RANDOM % 2500) * 2)); else p=$((15000 + RANDOM % 5000)); fi
    ok=yes
    for ((j = 0; j < span; j++)); do
      case $TAKEN in *" $((p + j)) "*) ok=no ;; esac
      port_used "$((p + j))" && ok=no
    done
    [ "$ok" = yes ] || continue
    for ((j = 0; j < span; j++)); do TAKEN+="$((p + j)) "; done
    echo "$p"
    return 0
  done
  die "no free port found in 15000..19999"
}
wait_port() { # PROTO PORT SECS: until something listens on it
  local proto=$1 port=$2 i flag=-tln
  [ "$proto" = udp ] && flag=-uln
  for i in $(seq 1 $(($3 * 10))); do
    ss -H "$flag" "sport = :$port" | grep -q . && return 0
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- the edge and its TLS client
# write_edge_config FILE WRITER SIP_EXTRA MEDIA_EXTRA
# The development PKI (dev-pki, in the directory of FILE), every socket on 127.0.0.1.
# SIP_EXTRA / MEDIA_EXTRA: extra lines for the [sip] / [media] tables (may be empty).
write_edge_config() {
  local file=$1 writer=$2 sip_extra=$3 media_extra=$4
  cat >"$file" <<EOF
# Written by $writer: the development PKI, every socket on 127.0.0.1.
[tls]
listen = "127.0.0.1:$TLS_PORT"
client_cert = "required"
# Every simulated phone is the same device on 127.0.0.1 (one certificate, one address), and
# SIPp opens one connection per call: lift the per-address connection limit.
max_connections_per_ip = 10000
[[tls.certificates]]
cert = "sbc.test-chain.crt"
key = "sbc.test.key"
[vendors.snom]
ca = ["snom-ca.crt"]
[pbx]
address = "127.0.0.1:$PBX_PORT"
transport = "udp"
listen = "127.0.0.1:$PBX_LISTEN_PORT"
[sip]
domain = "sbc.test"
# One device certificate plays every phone: its per-device request budget is switched off
# (0 is logged by the edge as a relaxation; production keeps the default).
phone_requests_per_second = 0
$sip_extra
[media]
phone_bind = "127.0.0.1"
phone_advertise = "127.0.0.1"
pbx_bind = "127.0.0.1"
port_min = $MEDIA_MIN
port_max = $MEDIA_MAX
$media_extra
[inventory]
file = "inventory.toml"
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[shutdown]
drain_timeout_secs = 2
EOF
}

# write_stunnel_conf FILE DEBUG_LEVEL [EXTRA_LINE]
# A TLS client for SIPp: the Snom-style dev device (MAC 000413A1B2C3), verifying the edge.
write_stunnel_conf() {
  local file=$1 debug=$2 extra=${3:-}
  cat >"$file" <<EOF
foreground = yes
pid =
debug = $debug
[sip-tls]
client = yes
accept = 127.0.0.1:$STUNNEL_PORT
connect = 127.0.0.1:$TLS_PORT
cert = $PKI/snom-000413A1B2C3.pem
CAfile = $PKI/server-ca.crt
verifyChain = yes
checkHost = sbc.test
sni = sbc.test
$extra
EOF
}

# wait_edge_ready PID LOG — polls /readyz on $ADMIN_PORT for up to 10 s.
wait_edge_ready() {
  local pid=$1 log=$2 i
  for i in $(seq 1 100); do
    curl -fsS --max-time 1 "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && return 0
    alive "$pid" || { tail -20 "$log" >&2; die "the edge exited"; }
    sleep 0.1
  done
  tail -20 "$log" >&2
  die "the edge was not ready within 10 s"
}
