#!/usr/bin/env bash
# `make dev`: the six carrier simulators, the callback/intake app and `dagster dev` (webserver +
# daemon, so the sensors run) for the UI. The demo tenant is seeded if missing, its service
# providers are pointed at the simulators (ports 8910-8915) and the simulators are seeded from the
# database, so any bulk change submitted in the UI or with `bulkchange submit` runs end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
BC="$VENV/bin/bulkchange"
export BULKCHANGE_CALLBACK_BASE_URL=${BULKCHANGE_CALLBACK_BASE_URL:-http://127.0.0.1:8080}
# The simulators' demo accounts: the same values `bulkchange simulate` prints.
eval "$("$BC" simulate --print-env --callback-base-url "$BULKCHANGE_CALLBACK_BASE_URL")"
"$BC" seed-demo >/dev/null
"$BC" simulate --seed-from-db --callback-base-url "$BULKCHANGE_CALLBACK_BASE_URL" &
SIM=$!
"$BC" serve --port "${BULKCHANGE_CALLBACK_BASE_URL##*:}" &
APP=$!
trap 'kill $SIM $APP 2>/dev/null || true' EXIT
"$VENV/bin/dagster" dev -w workspace.yaml -h 127.0.0.1 -p 3000
