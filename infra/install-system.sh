#!/usr/bin/env bash
# Installs the Debian packages the tests need (Chromium for the browser tests, espeak-ng and
# sox for real speech audio, an emoji font, npm for axe-core), only when one is missing. Needs
# root or sudo.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need+=(sox)
command -v npm >/dev/null 2>&1 || need+=(npm)
# The page shows the tutor's emojis; headless Chromium needs a colour emoji font for them.
[ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || need+=(fonts-noto-color-emoji)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing Debian packages: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
