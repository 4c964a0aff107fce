#!/usr/bin/env bash
# W&B sweep agents as a SLURM job array: one agent per GPU, each runs --count runs of the sweep.
#
#   wandb sweep sweeps/specs/reproduce.yaml            # prints ENTITY/PROJECT/SWEEP_ID
#   sbatch --array=0-7 sweeps/slurm_agents.sh ENTITY/PROJECT/SWEEP_ID 13
#
# A preempted or requeued task resumes its run: the agent re-runs it with the same W&B run id and
# sweeps/run.py continues from the last finished experience (the run directory follows from the config).
#SBATCH --job-name=cl-bench-agent
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=48G
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --output=slurm-%A_%a.out
set -euo pipefail
SWEEP="${1:?usage: sbatch --array=0-N sweeps/slurm_agents.sh ENTITY/PROJECT/SWEEP_ID [RUNS_PER_AGENT]}"
COUNT="${2:-1}"
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
source "${CL_BENCH_VENV:-.venv}/bin/activate"
export CL_BENCH_DATA="${CL_BENCH_DATA:-$HOME/data}"
exec wandb agent --count "$COUNT" "$SWEEP"
