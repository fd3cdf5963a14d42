#!/usr/bin/env bash
# check_packages.sh BUILD_DIR — builds the Debian packages (cpack) and
# checks one as an operator's host would get it: funnel-common and
# funnel-leads unpacked into a throwaway root, the binary runs, the
# package names its dependencies, the unit verifies (systemd-analyze, when
# installed; it needs no running systemd). Called by `deploy/funnel test`.
set -euo pipefail
BUILD=$(cd "${1:?usage: check_packages.sh BUILD_DIR}" && pwd)
fail() { echo "check_packages: $*" >&2; exit 1; }

rm -f "$BUILD"/funnel-*.deb
out=$(cd "$BUILD" && cpack -G DEB 2>&1) || fail "cpack failed: $out"
version=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$BUILD/CMakeCache.txt")
arch=$(dpkg --print-architecture)
for pkg in common campaign leads sales retention monitor; do
    [ -f "$BUILD/funnel-${pkg}_${version}_${arch}.deb" ] || fail "no funnel-${pkg}_${version}_${arch}.deb"
done
leads=$BUILD/funnel-leads_${version}_${arch}.deb
common=$BUILD/funnel-common_${version}_${arch}.deb

root=$(mktemp -d "${TMPDIR:-/tmp}/funnel-pkg.XXXXXX")
trap 'rm -rf "$root"' EXIT
dpkg -x "$common" "$root"
dpkg -x "$leads" "$root"

# What an operator's host gets: the binary, its unit, the config; nothing generated
help=$("$root/usr/bin/funnel-leads" --help) || fail "funnel-leads --help failed"
case "$help" in "Usage: funnel-leads"*) ;; *) fail "funnel-leads --help: $help";; esac
[ "$("$root/usr/bin/funnelctl" --version)" = "funnelctl $version" ] || fail "funnelctl --version"
unit=$root/usr/lib/systemd/system/funnel-leads.service
grep -qx "ExecStart=/usr/bin/funnel-leads -c /etc/funnel/funnel.cfg" "$unit" || fail "unit paths"
grep -qx "Type=notify" "$unit" || fail "unit type"
[ -f "$root/etc/funnel/funnel.cfg" ] || fail "no /etc/funnel/funnel.cfg"
if dpkg-deb -c "$leads" "$common" 2>/dev/null | grep -E '\.(c|h|o)$'; then
    fail "sources in a package"
fi
! grep -q "^Wants=" "$root/usr/lib/systemd/system/funnel.target" || fail "funnel.target wants units by name"
depends=$(dpkg-deb -f "$leads" Depends)
for dep in "funnel-common (= $version)" libczmq4 libhiredis0.14 libsystemd0; do
    case "$depends" in *"$dep"*) ;; *) fail "funnel-leads Depends lacks $dep: $depends";; esac
done
dpkg-deb -f "$common" Depends | grep -q adduser || fail "funnel-common Depends lacks adduser"

if command -v systemd-analyze >/dev/null; then
    # Offline: the host's own units give it sysinit.target and the like
    cp -an /lib/systemd/system/. "$root/usr/lib/systemd/system/" 2>/dev/null || true
    for u in funnel-leads.service funnel.target; do
        out=$(systemd-analyze verify --root="$root" "/usr/lib/systemd/system/$u" 2>&1) \
            || fail "systemd-analyze verify $u: $out"
        [ -z "$out" ] || fail "systemd-analyze verify $u: $out"
    done
    echo "check_packages: OK ($(cd "$BUILD" && ls funnel-*.deb | tr '\n' ' '); unit verified)"
else
    echo "check_packages: OK ($(cd "$BUILD" && ls funnel-*.deb | tr '\n' ' '); no systemd-analyze here)"
fi
