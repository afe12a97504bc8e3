#!/bin/bash
# CTC training launched with torchrun (one command per node; Lightning detects the torchelastic environment):
#   node 0:  NODE_RANK=0 MASTER=node0.example:29500 pipelines/launch/torchrun-ctc.sh
#   node 1:  NODE_RANK=1 MASTER=node0.example:29500 pipelines/launch/torchrun-ctc.sh
# Every node must use the same RUN_ID: it names the run directory (ctc-job<RUN_ID>) on the shared file system.
# Extra arguments go to `rnnlab fit`, e.g. --trainer.max_epochs=40.
set -euo pipefail
NODES=${NODES:-2}
GPUS=${GPUS:-8}
DATA=${DATA:-librispeech-100}
RUN_ID=${RUN_ID:-ctc-$(date +%Y%m%d)}
exec .venv/bin/torchrun --nnodes="$NODES" --nproc-per-node="$GPUS" --node-rank="${NODE_RANK:-0}" \
  --rdzv-backend=c10d --rdzv-endpoint="${MASTER:-localhost:29500}" --rdzv-id="$RUN_ID" \
  -m pipelines.cli fit -c defaults -c ctc -c speech-$DATA -c ctc-$DATA \
  --trainer.accelerator=gpu --trainer.devices="$GPUS" --trainer.num_nodes="$NODES" --trainer.strategy=ddp \
  --trainer.precision=bf16-mixed --data.init_args.num_workers=6 "$@"
