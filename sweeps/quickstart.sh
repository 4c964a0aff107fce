#!/usr/bin/env bash
# Set up cl-bench on this machine on first use, then run it.
#
#   bash sweeps/quickstart.sh                 # every strategy on the offline default bench, with a results table
#   bash sweeps/quickstart.sh --test [ARGS]   # the test suite (python -m pytest ARGS)
#   bash sweeps/quickstart.sh --python FILE   # any script of the repository in the environment
#   bash sweeps/quickstart.sh --cpu [...]     # the same, with PyTorch's CPU-only wheels (no CUDA libraries)
#
# The environment is a venv at $CL_BENCH_VENV (default: .venv in the repository), rebuilt when
# pyproject.toml or this script changes. --cpu installs torch and torchvision from PyTorch's CPU wheel
# index (https://download.pytorch.org/whl/cpu) into a new venv; a venv keeps the variant it was made
# with, so later calls need no --cpu. Fashion-MNIST and the typefaces of pretraining come from Debian
# packages (installed with apt-get when running as root, or with sudo; CL_BENCH_NO_APT=1 skips them).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${CL_BENCH_VENV:-.venv}"
PYTHON="${CL_BENCH_PYTHON:-python3}"
TORCH_CPU_INDEX="https://download.pytorch.org/whl/cpu"
TORCH_PINS="torch==2.14.1 torchvision==0.29.1"   # as pyproject.toml pins them

VARIANT=""
if [ "${1:-}" = "--cpu" ]; then
    VARIANT="cpu"
    shift
fi
RECORDED="$(cat "$VENV/.cl-bench-variant" 2>/dev/null || true)"
if [ -n "$VARIANT" ] && [ -n "$RECORDED" ] && [ "$RECORDED" != "$VARIANT" ]; then
    echo "quickstart: $VENV holds the default (CUDA) build of torch; for the CPU-only one remove it first" >&2
    echo "            (rm -rf $VENV) or use another venv: CL_BENCH_VENV=.venv-cpu bash sweeps/quickstart.sh --cpu" >&2
    exit 2
fi
VARIANT="${VARIANT:-${RECORDED:-default}}"
STAMP="$( (cat pyproject.toml sweeps/quickstart.sh; echo "$VARIANT") | sha256sum | cut -d' ' -f1)"
LOG="$VENV/install.log"

step() {  # a numbered line saying what happens now, and when
    echo "== $(date +%H:%M:%S) $*"
}

pip_install() {  # pip install ARGS, printing one line per package pip collects; the whole output goes to $LOG
    local status=0
    "$VENV/bin/pip" install --disable-pip-version-check --progress-bar off "$@" 2>&1 | tee -a "$LOG" \
        | awk '/^Collecting / { print "   " $0; fflush() }
               /^Installing collected packages/ { print "   unpacking and installing (the longest part) ..."; fflush() }' \
        || status=$?
    if [ "$status" != 0 ]; then
        echo "quickstart: pip failed (exit $status); the end of $LOG:" >&2
        tail -n 20 "$LOG" >&2
        exit "$status"
    fi
}

if [ ! -x "$VENV/bin/python" ]; then
    step "creating the virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$VENV/.cl-bench-stamp" 2>/dev/null)" != "$STAMP" ]; then
    SECONDS=0
    : > "$LOG"
    if [ "$VARIANT" = "cpu" ]; then
        step "[1/3] installing torch and torchvision, CPU-only wheels from $TORCH_CPU_INDEX"
        # shellcheck disable=SC2086
        pip_install --index-url "$TORCH_CPU_INDEX" $TORCH_PINS
    else
        step "[1/3] installing torch and torchvision with their CUDA libraries (the largest download; --cpu avoids them)"
        # shellcheck disable=SC2086
        pip_install $TORCH_PINS
    fi
    step "[2/3] installing cl-bench and its packages (avalanche-lib 0.6.0, timm, wandb, pandas, pytest, ...)"
    pip_install -e ".[test]"
    # Their declared requirements are wrong here (tensorflow; numpy<2): install them without.
    step "[3/3] installing animal-mnist and W&B's sweeps engine without their declared requirements"
    pip_install --no-deps animal-mnist==0.4 sweeps==0.3.0 jsonref==1.1.0
    echo "$VARIANT" > "$VENV/.cl-bench-variant"
    echo "$STAMP" > "$VENV/.cl-bench-stamp"
    step "installed in $((SECONDS / 60))m$((SECONDS % 60))s; $(du -sh "$VENV" 2>/dev/null | cut -f1) in $VENV; pip's output: $LOG"
fi

# Debian data: Fashion-MNIST (fashion_mnist, mnist_family30, pretraining) and typefaces (pretraining).
DEBIAN_PACKAGES="dataset-fashion-mnist fonts-dejavu-core fonts-dejavu-extra fonts-liberation2 fonts-freefont-ttf fonts-urw-base35"
MISSING=""
if [ -z "${CL_BENCH_NO_APT:-}" ]; then
    for package in $DEBIAN_PACKAGES; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || MISSING="$MISSING $package"
    done
fi
if [ -n "$MISSING" ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="$(command -v sudo || true)"; fi
    if [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; then
        step "installing Debian packages:$MISSING"
        $SUDO apt-get install -y --no-install-recommends $MISSING >/dev/null 2>&1 \
            || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends $MISSING >/dev/null; }
    else
        echo "note: Debian packages$MISSING are not installed (apt-get needs root): the fashion_mnist and"
        echo "      mnist_family30 benches and sweeps/pretrain.py need them; the default digits_animals bench does not"
    fi
fi

case "${1:-}" in
    --test)
        shift
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    --python)
        shift
        exec "$VENV/bin/python" "$@"
        ;;
    *)
        step "running every strategy on the offline bench digits_animals (about 18 minutes on 2 CPU cores)"
        status=0
        "$VENV/bin/python" sweeps/compare.py --bench digits_animals "$@" || status=$?
        if [ "$status" = 0 ]; then
            echo
            echo "Results: one directory per run under runs/ (record.json holds the config, R matrix, metrics and efficiency)."
            echo "Next:    source $VENV/bin/activate && python sweeps/report.py --runs runs"
            echo "         (writes reports/report.md with figures, CIs and significance tests; see README.md)"
        fi
        exit "$status"
        ;;
esac
