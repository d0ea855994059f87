#!/usr/bin/env bash
# CRIU for container checkpoint/restore and migration (runc drives it), into a private
# prefix (default /opt/cumulo/criu; scripts/install.sh calls this). Usage:
#   install-criu.sh [PREFIX]        # idempotent: a second run only checks PREFIX/VERSION
#
# Why not Debian 12's: its criu 3.17 fails `criu check` on recent kernels; Debian 13's
# 4.1.1 passes it but cannot dump any TCP/UDP socket on kernels >= 6.16 ("Can't get 1:16
# opt": SO_PASSCRED is refused on inet sockets since then; fixed in CRIU 4.2), so
# containers serving on a NIC could not be checkpointed. Debian forky (testing) has 4.2.1,
# built with libnftables, so it can lock a container's network with nftables (Cumulo
# asks for that: a fresh Debian 12 has no iptables-restore, CRIU's default lock).
# It needs a newer libc than bookworm's, so forky's criu and its libraries are unpacked
# into PREFIX/root (never dpkg-installed: the host's libc is untouched) and run by their
# own loader from the wrapper PREFIX/criu. A private apt state in a temp dir resolves the
# libraries; nothing is added to /etc/apt.
#
# Pinned: testing moves, so the version tested with Cumulo is fixed here with the sha256
# of its two .debs (criu and libcompel1, one source package). If forky no longer lists it,
# the same files are fetched from the Debian pool if still there (unstable may still list
# them), checked against these sums; otherwise this stops and says what to do. The
# libraries it links come from forky as they are now (the result is checked below).
# The new CRIU is built in PREFIX.tmp and checked (version, nftables lock) before it
# replaces PREFIX, so a failed update leaves a working install as it was.
set -euo pipefail

PREFIX=${1:-/opt/cumulo/criu}
SUITE=forky
MIRROR=http://deb.debian.org/debian
VERSION=4.2.1-1
DEBS=(   # package sha256 (of the .deb, as in the suite's Packages index)
  "criu 4039578de7dd6480964754c1348416f0f0658fba3eadaa918bfe43e9a5fb9b04"
  "libcompel1 c41087440d28973c9abc04dcd31674a28969e5dc0cefde5023a89aaf07ef357d"
)

fail() { echo "install-criu.sh: $*" >&2; exit 1; }

if [ "$(cat "$PREFIX/VERSION" 2>/dev/null)" = "$VERSION" ] &&
    "$PREFIX/criu" --version 2>/dev/null | grep -q "^Version: ${VERSION%-*}$"; then
  exit 0
fi
echo "==> fetching criu $VERSION from Debian $SUITE into $PREFIX"
work=$(mktemp -d)
chmod 755 "$work"                    # apt-get download drops to the _apt user
trap 'rm -rf "$work" "$PREFIX.tmp"' EXIT
mkdir -p "$work"/{lists/partial,cache/archives/partial,parts,prefs,debs}
chmod 777 "$work/debs"
touch "$work/status"                 # an empty dpkg status: every dependency is fetched
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $SUITE main" \
  > "$work/sources.list"
apt=(-o Dir::Etc::sourcelist="$work/sources.list" -o Dir::Etc::sourceparts="$work/parts"
     -o Dir::Etc::preferencesparts="$work/prefs" -o Dir::State::Lists="$work/lists"
     -o Dir::State::status="$work/status" -o Dir::Cache="$work/cache" -o APT::Architecture=amd64)
apt-get "${apt[@]}" update -qq || fail "cannot read Debian $SUITE from $MIRROR"

# the pinned .debs: from the suite's index, else straight from the pool
listed=$(apt-cache "${apt[@]}" show "criu=$VERSION" 2>/dev/null | grep -c '^Package:' || true)
for entry in "${DEBS[@]}"; do
  read -r pkg sum <<<"$entry"
  deb="$work/debs/${pkg}_${VERSION}_amd64.deb"
  if [ "$listed" -gt 0 ]; then
    (cd "$work/debs" && apt-get "${apt[@]}" download -qq "$pkg=$VERSION" >/dev/null)
  else
    url="$MIRROR/pool/main/c/criu/${pkg}_${VERSION}_amd64.deb"
    /usr/lib/apt/apt-helper download-file "$url" "$deb" "SHA256:$sum" >/dev/null 2>&1 || {
      now=$(apt-cache "${apt[@]}" policy criu | awk '/Candidate:/ {print $2}')
      fail "criu $VERSION (the version tested with Cumulo) is no longer in Debian $SUITE" \
           "(it has ${now:-none}) nor in $MIRROR/pool. Test the new one and update VERSION" \
           "and the sums in scripts/install-criu.sh, or copy a working $PREFIX from" \
           "another host."; }
  fi
  [ -f "$deb" ] || fail "apt-get did not fetch $pkg $VERSION"
  echo "$sum  $deb" | sha256sum --check --quiet - >/dev/null 2>&1 ||
    fail "$pkg $VERSION from $SUITE is not the file tested with Cumulo (sha256 differs)"
done

# the libraries they link, from the suite (names from the pinned .debs' Depends)
mapfile -t deps < <(for d in "$work"/debs/*.deb; do dpkg-deb -f "$d" Depends; done |
  tr ',' '\n' | sed 's/|.*//; s/(.*//; s/ //g' | grep -v -e '^$' -e '^libcompel1$' | sort -u)
mapfile -t libs < <(apt-cache "${apt[@]}" depends --recurse --no-recommends --no-suggests \
  --no-conflicts --no-breaks --no-replaces --no-enhances "${deps[@]}" | grep -v '^ ' |
  grep -v -e '^<' -e '^criu$' -e '^libcompel1$' | sort -u)
(cd "$work/debs" && apt-get "${apt[@]}" download -qq "${libs[@]}" >/dev/null) ||
  fail "cannot fetch the libraries criu needs from Debian $SUITE: ${libs[*]}"

rm -rf "$PREFIX.tmp"
mkdir -p "$PREFIX.tmp/root"
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$PREFIX.tmp/root"; done
rm -rf "$PREFIX.tmp/root/usr/share/doc" "$PREFIX.tmp/root/usr/share/man" \
  "$PREFIX.tmp/root/usr/share/locale"
echo "$VERSION" > "$PREFIX.tmp/VERSION"
wrapper() {   # $1: where root/ is
  echo '#!/bin/sh'
  echo "# criu $VERSION from Debian $SUITE, run by its own loader and libraries (scripts/install-criu.sh)"
  echo "r=$1/root"
  echo 'exec "$r/usr/lib64/ld-linux-x86-64.so.2" --library-path "$r/usr/lib/x86_64-linux-gnu" "$r/usr/sbin/criu" "$@"'
}
wrapper "$PREFIX.tmp" > "$PREFIX.tmp/criu"
chmod 755 "$PREFIX.tmp/criu"
"$PREFIX.tmp/criu" --version 2>&1 | grep -q "^Version: ${VERSION%-*}$" ||
  fail "the criu $VERSION just unpacked does not run: $("$PREFIX.tmp/criu" --version 2>&1 | head -1)"
"$PREFIX.tmp/criu" check --feature network_lock_nftables >/dev/null 2>&1 ||
  fail "the criu $VERSION just unpacked cannot lock the network with nftables here" \
       "(is nftables' kernel module available? \`nft list tables\` must work)"
if ! "$PREFIX.tmp/criu" check >/dev/null 2>&1; then
  echo "install-criu.sh: warning: \`criu check\` fails on this kernel; checkpoints will be" \
       "refused (see \`cumulo host info\`)" >&2
fi
wrapper "$PREFIX" > "$PREFIX.tmp/criu"

rm -rf "$PREFIX.old"
if [ -d "$PREFIX" ]; then mv "$PREFIX" "$PREFIX.old"; fi
mv "$PREFIX.tmp" "$PREFIX"
rm -rf "$PREFIX.old"
