#!/usr/bin/env bash
# Start the Jasper simulator and `dagster dev` (webserver + daemon, so the sensors run) for the UI.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export BULKCHANGE_CRED_DEMO_JASPER_USERNAME=${BULKCHANGE_CRED_DEMO_JASPER_USERNAME:-demo}
export BULKCHANGE_CRED_DEMO_JASPER_SECRET=${BULKCHANGE_CRED_DEMO_JASPER_SECRET:-demo-api-key}
"$VENV/bin/python" -m bulkchange_pipeline.simulators jasper --port 8910 --rate 0 --concurrency 8 \
  --account "$BULKCHANGE_CRED_DEMO_JASPER_USERNAME:$BULKCHANGE_CRED_DEMO_JASPER_SECRET" &
SIM=$!
trap 'kill $SIM 2>/dev/null || true' EXIT
"$VENV/bin/dagster" dev -w workspace.yaml -h 127.0.0.1 -p 3000
