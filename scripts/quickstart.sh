#!/usr/bin/env bash
# The main job, on a fresh machine: build upkeep, build the sample release
# bundles (offline), install v1.0.0 into a demo site and start it, back it up.
#   scripts/quickstart.sh [SITE_DIR]     (default: target/demo-site)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SITE=${1:-$PWD/target/demo-site}

cargo build --release
BUNDLES=$(scripts/fixtures.sh)
UPKEEP=$PWD/target/release/upkeep
export UPKEEP_SITE=$SITE

echo "+ upkeep install $BUNDLES/upkeep-sample-v1.0.0.tar.gz"
if [ -d "$SITE/releases/v1.0.0" ]; then
  echo "  (already installed)"
else
  "$UPKEEP" install "$BUNDLES/upkeep-sample-v1.0.0.tar.gz"
fi
echo "+ upkeep up v1.0.0"
"$UPKEEP" up v1.0.0
echo "+ upkeep backup v100"
"$UPKEEP" backup v100
echo "+ upkeep snapshots"
"$UPKEEP" snapshots
cat <<MSG

The sample app answers on http://127.0.0.1:$("$UPKEEP" status v100 --json | sed -n 's/.*"host_port": \([0-9]*\).*/\1/p' | head -1)/
Try: export UPKEEP_SITE=$SITE; $UPKEEP status
Stop it with: $UPKEEP down v100   (volumes are kept)
MSG
