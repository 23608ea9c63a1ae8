#!/usr/bin/env bash
# Debian packages napari needs to open a window (or to run headless under Xvfb).
# Installs only what is missing; needs root or sudo for apt-get.
set -euo pipefail
pkgs=(xvfb xauth libgl1 libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0
      libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0
      libxcb-shape0 libxcb-cursor0 libxcb-xkb1 libdbus-1-3 libfontconfig1 libglib2.0-0)
command -v dpkg-query >/dev/null || { echo "not a Debian system: install Xvfb and the Qt xcb libraries yourself"; exit 0; }
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
