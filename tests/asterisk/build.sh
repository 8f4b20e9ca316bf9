#!/usr/bin/env bash
# Build Asterisk 22 LTS against pjproject 2.17 from two source checkouts into PREFIX
# (outside the repository), for tests/asterisk/run.sh. Nothing of Asterisk or pjproject is
# copied into this project: the sources are read from the two checkouts given.
#
# Usage: tests/asterisk/build.sh AST_SRC PJ_SRC PREFIX [SCRATCH]
#   AST_SRC  a git checkout (or bare mirror) of github.com/asterisk/asterisk
#   PJ_SRC   a git checkout (or bare mirror) of github.com/pjsip/pjproject
#   PREFIX   install prefix, e.g. /opt/pbx-edge-asterisk (asterisk in PREFIX/sbin,
#            pjproject in PREFIX/pj)
#   SCRATCH  build directory (default: a temporary one), deleted after a successful install
# Env: AST_TAG (default 22.10.1), PJ_TAG (default 2.17, the version Asterisk 22.10 bundles),
#      JOBS (default 2).
#
# Why pjproject is built separately (--without-pjproject-bundled): the bundled build
# downloads a tarball during configure, which CI machines and this one cannot do. Asterisk's
# own patches and config_site.h are applied so the result matches the bundled build; a stock
# pjproject aborts Asterisk at start ("Too many modules registered": PJSIP_MAX_MODULE).
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,16p' "$0" >&2; exit 64; }
AST=$(cd "$1" && pwd); PJ=$(cd "$2" && pwd); PREFIX=$3
AST_TAG=${AST_TAG:-22.10.1}; PJ_TAG=${PJ_TAG:-2.17}; JOBS=${JOBS:-2}
SCRATCH=${4:-$(mktemp -d /tmp/pbx-edge-asterisk-build.XXXXXX)}
mkdir -p "$SCRATCH" "$PREFIX"; PREFIX=$(cd "$PREFIX" && pwd)
log() { printf '[build.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

missing=()
for p in build-essential libedit-dev libjansson-dev libxml2-dev libsqlite3-dev uuid-dev libssl-dev pkg-config; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian build packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

log "extracting asterisk $AST_TAG and pjproject $PJ_TAG into $SCRATCH"
git -C "$PJ" archive --prefix="pjproject-$PJ_TAG/" "$PJ_TAG" | tar -x -C "$SCRATCH"
git -C "$AST" archive --prefix="asterisk-$AST_TAG/" "$AST_TAG" | tar -x -C "$SCRATCH"
ASRC=$SCRATCH/asterisk-$AST_TAG; PSRC=$SCRATCH/pjproject-$PJ_TAG

log "pjproject: Asterisk's patches and config_site.h"
cd "$PSRC"
# The 0000-* patches adapt the bundled tarball's build system to Asterisk's tree (they drop
# PJDIR and the third-party libraries) and break a standalone build; the numbered fixes
# from 0010 on are the behaviour Asterisk expects.
for p in "$ASRC"/third-party/pjproject/patches/00[1-9]*.patch; do
  patch -p1 -N -s < "$p" || { log "patch $(basename "$p") did not apply"; exit 1; }
done
# asterisk_malloc_debug.h only links inside Asterisk's bundled build.
python3 - "$ASRC/third-party/pjproject/patches/config_site.h" > pjlib/include/pj/config_site.h <<'PY'
import sys
s = open(sys.argv[1]).read()
s = s.replace('#if !defined(_ASTERISK_ASTMM_H)\n#include "asterisk_malloc_debug.h"\n#endif\n', '')
print(s, end='')
PY
echo 'export CFLAGS += -fPIC' > user.mak
./configure --prefix="$PREFIX/pj" --enable-shared --disable-video --disable-sound \
  --disable-opencore-amr --disable-resample --disable-speex-codec --disable-speex-aec \
  --disable-gsm-codec --disable-ilbc-codec --disable-l16-codec --disable-g722-codec \
  --disable-g7221-codec --disable-silk --disable-opus --disable-libwebrtc --disable-libyuv \
  --disable-openh264 --disable-v4l2 --disable-ffmpeg --disable-sdl --disable-bcg729 \
  --disable-libsrtp >/dev/null
log "pjproject: make"
make dep -j"$JOBS" >/dev/null 2>&1 && make -j"$JOBS" >/dev/null 2>&1 && make install >/dev/null

log "asterisk: configure"
cd "$ASRC"
PKG_CONFIG_PATH="$PREFIX/pj/lib/pkgconfig" ./configure --prefix="$PREFIX" \
  --without-pjproject-bundled --with-pjproject --with-jansson-bundled=no \
  --without-libjwt-bundled >/dev/null
make menuselect.makeopts >/dev/null
# Add-ons, tests, sound downloads and -march=native off: small, portable, no network.
menuselect/menuselect --disable CORE-SOUNDS-EN-GSM --disable MOH-OPSOUND-WAV \
  --disable-category MENUSELECT_ADDONS --disable-category MENUSELECT_TESTS \
  --disable BUILD_NATIVE menuselect.makeopts >/dev/null
log "asterisk: make"
make -j"$JOBS" >/dev/null 2>&1 || make >/dev/null
make install >/dev/null
"$PREFIX/sbin/asterisk" -V
case "$SCRATCH" in /tmp/pbx-edge-asterisk-build.*) rm -rf "$SCRATCH" ;; *) log "build tree kept in $SCRATCH" ;; esac
log "installed into $PREFIX (run with LD_LIBRARY_PATH=$PREFIX/pj/lib)"
