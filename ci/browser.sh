#!/usr/bin/env bash
# Install what the browser tests (tests/web, marker `browser`) need on a fresh Debian/Ubuntu machine:
# the distribution's Chromium (Playwright drives it via executable_path; `playwright install` is never
# run, nothing is downloaded outside the package managers) and CJK fonts so Chinese text renders in the
# screenshots. Needs root for apt-get. Idempotent and quiet: prints one line on stdout, the Chromium path
# (export it as CSPON_CHROMIUM if it is not /usr/bin/chromium). Progress goes to stderr.
#
# The Python side (playwright==1.65.2) comes from the test extras; pass PIP=<venv>/bin/pip to install it here.
set -euo pipefail

log() { echo "[browser.sh] $*" >&2; }
export DEBIAN_FRONTEND=noninteractive

find_chromium() {
    for c in "${CSPON_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser "$(command -v chromium 2>/dev/null || true)"; do
        if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return 0; fi
    done
    return 1
}

need=()
find_chromium >/dev/null || need+=(chromium)
if ! fc-list 2>/dev/null | grep -qiE "Noto Sans CJK|WenQuanYi"; then
    need+=(fonts-noto-cjk)
fi
# gpsbabel validates the patrol GPX/KML files (tests/exports/test_patrol_formats.py); small, no GUI.
command -v gpsbabel >/dev/null 2>&1 || need+=(gpsbabel)
if [ "${#need[@]}" -gt 0 ]; then
    log "installing ${need[*]} with apt-get"
    apt-get update -qq >&2
    # Debian names the package `chromium`; on Ubuntu `chromium-browser` is a snap shim, so prefer Debian.
    apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

if [ -n "${PIP:-}" ]; then
    if ! "${PIP}" show playwright >/dev/null 2>&1; then
        log "installing playwright (Python package only; browsers are NOT downloaded)"
        "${PIP}" install -q "playwright==1.65.2" >&2
    fi
fi

exe="$(find_chromium)" || { log "chromium still not found after apt-get"; exit 1; }
log "$("${exe}" --version 2>/dev/null | head -n 1)"
echo "${exe}"
