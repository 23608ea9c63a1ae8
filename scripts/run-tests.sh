#!/usr/bin/env bash
# Run the whole suite; GUI tests need a display, so use Xvfb when there is none.
set -euo pipefail
py=${1:-.venv/bin/python}
shift || true
if [ -n "${DISPLAY:-}" ]; then
  exec "$py" -m pytest "$@"
fi
exec xvfb-run -a -s "-screen 0 1600x1200x24" "$py" -m pytest "$@"
