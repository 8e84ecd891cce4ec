#!/usr/bin/env bash
# Reproduce docs/evaluation.md: score retrieval on LoCoMo through a running service.
#
# Usage: bench/eval_locomo.sh path/to/locomo10.json [extra engram eval options]
# Start the service first with its token rate limit off, for example:
#   ENGRAM_RATE_LIMIT_PER_TOKEN_PER_MINUTE=0 make run
# The first run imports the conversations; later runs can pass --no-ingest.
# Reports go to reports/eval/ (not committed: they derive from CC BY-NC data).
set -euo pipefail
cd "$(dirname "$0")/.."

data=${1:?pass the path of locomo10.json}
shift
export HF_HUB_OFFLINE=1
export ENGRAM_TOKEN=${ENGRAM_TOKEN:-$(make -s token SUB=eval SCOPES="memory:read memory:write memory:delete")}
.venv/bin/engram eval locomo "$data" --out reports/eval "$@"
