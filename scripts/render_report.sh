#!/usr/bin/env bash
# Render a radfusion report in headless Chromium and save a screenshot: proof that the page
# opens offline and draws its tables and figures.
#   Usage: scripts/render_report.sh RUN_DIR/report/report.html [OUT.png]
#   Needs Chromium (Debian: apt-get install chromium).
set -euo pipefail
page=$(realpath "$1")
out=${2:-${page%.html}.png}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
    echo "no Chromium found; install it (apt-get install chromium) and rerun" >&2
    exit 2
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# No network: the page must render from the file alone.
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --window-size=1300,2400 --screenshot="$out" "file://$page" \
    2>/dev/null
test -s "$out"
echo "wrote $out"
