#!/usr/bin/env bash
# One training run over several nodes with torchrun (PyTorch DDP over NCCL): one torchrun
# per node, meeting at a c10d rendezvous on the first node. The global batch (--batch-size)
# is split over all processes; rank 0 writes the checkpoint, result and W&B files, so
# checkpoints/ and results/ must be on a shared file system for a restart to resume.
#
#   sbatch --nodes=2 slurm/torchrun_multinode.sh --dataset imagenet --model p4_resnet18 \
#       --input-size 225 --data-dir /data/imagenet-tfrecords --amp --workers 8
#
#SBATCH --job-name=equivlib-ddp
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=32
#SBATCH --time=48:00:00
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: sbatch slurm/torchrun_multinode.sh TRAIN-OPTIONS..." >&2; exit 2; }
cd "${SLURM_SUBMIT_DIR:-.}"
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
gpus_per_node="${SLURM_GPUS_ON_NODE:-4}"
export WANDB_MODE="${WANDB_MODE:-offline}"
srun .venv/bin/torchrun --nnodes "$SLURM_JOB_NUM_NODES" --nproc_per_node "$gpus_per_node" \
    --rdzv_backend c10d --rdzv_endpoint "$head_node:29500" --rdzv_id "$SLURM_JOB_ID" \
    -m equivlib train --device cuda "$@"
