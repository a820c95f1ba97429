#!/usr/bin/env bash
# A notebook's training grid split over a SLURM job array: array task K of N trains the
# K-th of N disjoint shards of the grid into the shared results store (results/ of this
# checkout, which must be on a file system every node sees). Runs are claimed in the store
# before they train, so overlapping or re-submitted tasks never train a run twice; a task
# that dies leaves its runs' checkpoints, and the next submission resumes them.
# The profile is checked as ./run_all.sh checks it (equivlib.experiments.notebook_params):
# a params file that the rebuild would refuse is refused here before any run is claimed.
#
#   sbatch --array=1-16 slurm/grid_array.sh 04_rotmnist_rotation paper
#   # when every task has finished, draw the figures from the store (no training left):
#   ./run_all.sh --profile paper --only 04,05
#
#SBATCH --job-name=equivlib-grid
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=24:00:00
#SBATCH --output=slurm-%x-%A_%a.out
set -euo pipefail
notebook="${1:?usage: sbatch --array=1-N slurm/grid_array.sh NOTEBOOK [PROFILE]}"
profile="${2:-paper}"
: "${SLURM_ARRAY_TASK_ID:?submit with sbatch --array=1-N}"
cd "${SLURM_SUBMIT_DIR:-.}"
export WANDB_MODE="${WANDB_MODE:-offline}"
# task ids may start at 0 or 1 (--array=0-15 or 1-16): shard K counts from the lowest id
min="${SLURM_ARRAY_TASK_MIN:-1}"
count="${SLURM_ARRAY_TASK_COUNT:?SLURM_ARRAY_TASK_COUNT unset (SLURM >= 17.02 sets it)}"
exec .venv/bin/python -m equivlib grid --notebook "$notebook" --profile "$profile" \
    --shard "$((SLURM_ARRAY_TASK_ID - min + 1))/$count"
