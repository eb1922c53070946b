#!/usr/bin/env bash
# `make run`: start corral on this host and boot a demo VM from the tiny guest image.
set -euo pipefail
cd "$(dirname "$0")/.."
CORRAL=.venv/bin/corral
DATA_DIR=${CORRAL_DATA_DIR:-/var/lib/corral}
export CORRAL_DATA_DIR=$DATA_DIR

if ! $CORRAL status >/dev/null 2>&1; then
  $CORRAL up --detach --data-dir "$DATA_DIR"
fi
$CORRAL status

if ! $CORRAL image list -o json | grep -q '"name": "tiny"'; then
  $CORRAL image build-tiny tiny
  $CORRAL image share tiny
fi
if ! $CORRAL vm list -o json | grep -q '"name": "demo"'; then
  $CORRAL vm create demo --image tiny --memory 256M --start
else
  $CORRAL vm show demo -o json | grep -q '"state": "running"' || $CORRAL vm start demo
fi
$CORRAL vm list

cat <<MSG

corral is running (data dir $DATA_DIR, API $(python3 -c "import json;print(json.load(open('$DATA_DIR/client.json'))['url'])")).
  .venv/bin/corral vm console demo       # serial console of the demo VM (Ctrl-] leaves)
  .venv/bin/corral vm console demo --log # what it printed while booting
  .venv/bin/corral --help                # everything else
  make down                              # stop corral (VMs keep running)
MSG
