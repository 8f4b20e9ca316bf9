#!/usr/bin/env bash
# Builds the seed corpora of every fuzz target from the test fixtures (fuzz/corpus/ is not
# committed: libFuzzer grows it). Re-running adds the seeds again; existing entries stay.
set -euo pipefail
cd "$(dirname "$0")"
fx=../tests/fixtures
c=corpus
mkdir -p $c/{sip_stream,sip_datagram,sdp_offer_answer,sdes_crypto,flow_token,provisioning_path,inventory,cert_mac,srtp_unprotect,inspect_cert,media_packet}

for f in $fx/sip/*.sip; do
  n=$(basename "$f" .sip)
  cp "$f" "$c/sip_datagram/$n"
  # sip_stream: the first byte is the read size; 0xff = one read, 0x00 = byte by byte.
  { printf '\xff'; cat "$f" "$f"; } > "$c/sip_stream/$n-whole"
  { printf '\x06'; cat "$f"; printf '\r\n\r\n'; } > "$c/sip_stream/$n-trickle"
done

# sdp_offer_answer: a selector byte, an offer, NUL, an answer (fixture pairs *.in.sdp).
offers=( $fx/sdp/*offer*.in.sdp )
answers=( $fx/sdp/*answer*.in.sdp )
i=0
for o in "${offers[@]}"; do
  a=${answers[$(( i % ${#answers[@]} ))]}
  { printf '\x00'; cat "$o"; printf '\x00'; cat "$a"; } > "$c/sdp_offer_answer/$(basename "$o" .in.sdp)-m"
  { printf '\x01'; cat "$o"; printf '\x00'; cat "$a"; } > "$c/sdp_offer_answer/$(basename "$o" .in.sdp)-o"
  i=$(( i + 1 ))
done

# sdes_crypto: every a=crypto value in the SDP fixtures.
i=0
grep -h '^a=crypto:' $fx/sdp/*.sdp | tr -d '\r' | sort -u | while read -r line; do
  printf '%s' "${line#a=crypto:}" > "$c/sdes_crypto/line-$i"
  i=$(( i + 1 ))
done

printf 'edge-flow-token-not-authentic' > $c/flow_token/plain
printf '/snom/000413A1B2C3.xml' > $c/provisioning_path/plain
printf '/a/./b/../%%2e%%2e/c%%2F..//000413a1b2c3.cfg?x=1' > $c/provisioning_path/dots

{ printf '\x00'; cat ../config/inventory.toml; } > $c/inventory/example-toml
{ printf '\x01'; printf 'mac,users,label,provisioning\n00:04:13:A1:B2:C3,101;102,reception,/{mac}.cfg\n# c\n0004.13a1.b2c4,*,x,\n'; } > $c/inventory/example-csv

for f in $fx/certs/*.pem $fx/certs/*.der; do
  cp "$f" "$c/cert_mac/$(basename "$f")"
done
# The DER of each PEM certificate too.
for f in $fx/certs/*device*.pem; do
  openssl x509 -in "$f" -outform DER -out "$c/cert_mac/$(basename "$f" .pem).der" 2>/dev/null || true
done
# media_packet: a selector byte, then length-prefixed packets: RTP (PCMU, two sequence
# numbers), an RTCP receiver report, a packet too short for either; an SR + RR compound.
rtp() { printf '\xac\x80\x00\x00%b\x00\x00\x00\xa0\x12\x34\x56\x78' "$1"; head -c 160 /dev/zero | tr '\0' '\377'; }
{ printf '\x00'; rtp '\x01'; rtp '\x02'; printf '\x20\x81\xc9\x00\x07'; head -c 28 /dev/zero; printf '\x03\x80\x00\x01'; } > $c/media_packet/rtp-rtcp
{ printf '\x08'; rtp '\x01'; rtp '\x01'; } > $c/media_packet/repeat-mki
# An SR with one report block (52 bytes), then an RR: what the RTCP reader walks.
{ printf '\x00\x34\x81\xc8\x00\x0c'; head -c 48 /dev/zero | tr '\0' '\001'; printf '\x20\x81\xc9\x00\x07'; head -c 28 /dev/zero; } > $c/media_packet/sr-rr

# inspect_cert: the fixture certificates, and the development PKI the target judges files
# against (its first start generates it into state/inspect_cert/dev-pki/; started here with
# -runs=0 when built and not there yet): each device certificate alone, with its CA (a chain
# that verifies), with its key (what dev-pki hands to baresip), and as DER.
cp $c/cert_mac/* $c/inspect_cert/
bin=target/x86_64-unknown-linux-gnu/debug/inspect_cert
pki=state/inspect_cert/dev-pki
if [ ! -f $pki/pbx-edge.toml ] && [ -x $bin ]; then
  mkdir -p state/inspect_cert
  $bin -runs=0 >/dev/null 2>&1 || true
fi
if [ -f $pki/pbx-edge.toml ]; then
  for v in snom yealink; do
    for f in $pki/$v-????????????.crt; do
      n=$(basename "$f" .crt)
      cp "$f" "$c/inspect_cert/dev-$n"
      cat "$f" "$pki/$v-ca.crt" > "$c/inspect_cert/dev-$n-chain"
      cp "$pki/$n.pem" "$c/inspect_cert/dev-$n-with-key"
      openssl x509 -in "$f" -outform DER -out "$c/inspect_cert/dev-$n.der" 2>/dev/null || true
    done
  done
  cp $pki/sbc.test-chain.crt "$c/inspect_cert/dev-server-chain"
else
  echo "seed.sh: inspect_cert not built yet: its development PKI certificates are not seeded" >&2
fi
echo "seeded $(find $c -type f | wc -l) files in fuzz/$c/"
