#!/usr/bin/env bash
# Scans pbx-edge's phone listener (SIP over TLS) and its HTTPS provisioning gateway with
# testssl.sh (Debian package `testssl.sh`), on loopback, with a throw-away development PKI.
# Prints every finding of severity MEDIUM or worse and exits 1 when there is one.
#
#   bash tests/security/testssl.sh [PBX_EDGE_BINARY]     (default: target/release/pbx-edge,
#                                                         else target/debug/pbx-edge)
# Takes a few minutes per listener. Not part of tests/run-all (too slow for every CI run);
# its last result is recorded in SECURITY.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${1:-}"
if [ -z "$bin" ]; then
  if [ -x target/release/pbx-edge ]; then bin=target/release/pbx-edge; else bin=target/debug/pbx-edge; fi
fi
[ -x "$bin" ] || { echo "no pbx-edge binary at $bin (cargo build first)" >&2; exit 2; }
command -v testssl >/dev/null || { echo "testssl missing: apt-get install testssl.sh" >&2; exit 2; }

work="$(mktemp -d)"
edge_pid=""
cleanup() {
  if [ -n "$edge_pid" ]; then kill "$edge_pid" 2>/dev/null || true; wait "$edge_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" dev-pki --out "$work/pki" >/dev/null
mkdir -p "$work/prov"
echo "common" > "$work/prov/common.cfg"
sip_port=25061; prov_port=28443; admin_port=29090; pbx_port=25080
cat >> "$work/pki/pbx-edge.toml" <<TOML

[provisioning]
listen = "127.0.0.1:$prov_port"
root = "$work/prov"
TOML
PBX_EDGE_TLS__LISTEN="127.0.0.1:$sip_port" PBX_EDGE_ADMIN__LISTEN="127.0.0.1:$admin_port" \
PBX_EDGE_PBX__LISTEN="127.0.0.1:$pbx_port" PBX_EDGE_PBX__ADDRESS="127.0.0.1:25060" \
  "$bin" run --config "$work/pki/pbx-edge.toml" >"$work/edge.log" 2>&1 &
edge_pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null || { cat "$work/edge.log" >&2; exit 2; }

status=0
for target in "phone listener:127.0.0.1:$sip_port" "provisioning:127.0.0.1:$prov_port"; do
  name="${target%%:*}"; addr="${target#*:}"
  json="$work/$(echo "$name" | tr ' ' _).json"
  echo "== testssl against the $name ($addr)"
  # Bounded: testssl's own socket and openssl timeouts, and an overall limit.
  # The development server CA is added as a trusted root (as phones get it loaded), so
  # the chain is judged as a phone judges it.
  timeout 900 testssl --quiet --color 0 --warnings off --connect-timeout 5 --openssl-timeout 5 \
    --add-ca "$work/pki/server-ca.crt" \
    --severity LOW --jsonfile "$json" "$addr" >"$work/$name.txt" 2>&1 || true
  python3 - "$json" <<'PY' || status=1
import json, sys
findings = json.load(open(sys.argv[1]))
order = {"LOW": 1, "MEDIUM": 2, "HIGH": 3, "CRITICAL": 4}
# Waived, and only because the scan runs on the throw-away development PKI: its server
# certificate names no CRL or OCSP URI (there is no server to answer them). An operator's
# certificate from a public or company CA carries them; the edge serves it unchanged.
waived = {"cert_revocation"}
for f in findings:
    if f.get("id") in waived and order.get(f.get("severity"), 0) >= 2:
        print(f"  WAIVED   {f['id']} ({f['severity']}): {f['finding']} (development PKI only)")
findings = [f for f in findings if f.get("id") not in waived]
bad = [f for f in findings if order.get(f.get("severity"), 0) >= 2]
low = [f for f in findings if f.get("severity") == "LOW"]
for f in low:
    print(f"  LOW      {f['id']}: {f['finding']}")
for f in bad:
    print(f"  {f['severity']:<8} {f['id']}: {f['finding']}")
print(f"  {len(bad)} finding(s) MEDIUM or worse, {len(low)} LOW")
sys.exit(1 if bad else 0)
PY
done
exit $status
