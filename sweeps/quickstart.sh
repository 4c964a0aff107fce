#!/usr/bin/env bash
# Set up cl-bench on this machine on first use, then run it.
#
#   bash sweeps/quickstart.sh                 # every strategy on the offline default bench, with a results table
#   bash sweeps/quickstart.sh --test [ARGS]   # the test suite (python -m pytest ARGS)
#   bash sweeps/quickstart.sh --python FILE   # any script of the repository in the environment
#
# The environment is a venv at $CL_BENCH_VENV (default: .venv in the repository), rebuilt when
# pyproject.toml or this script changes. Fashion-MNIST and the typefaces of pretraining come from
# Debian packages (installed with apt-get when running as root, or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${CL_BENCH_VENV:-.venv}"
PYTHON="${CL_BENCH_PYTHON:-python3}"
STAMP="$(cat pyproject.toml sweeps/quickstart.sh | sha256sum | cut -d' ' -f1)"

if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$VENV/.cl-bench-stamp" 2>/dev/null)" != "$STAMP" ]; then
    echo "== installing packages into $VENV (torch 2.14.1, avalanche-lib 0.6.0, timm, wandb, ...)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -e ".[test]"
    # Their declared requirements are wrong here (tensorflow; numpy<2): install them without.
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps animal-mnist==0.4 sweeps==0.3.0 jsonref==1.1.0
    echo "$STAMP" > "$VENV/.cl-bench-stamp"
fi

# Debian data: Fashion-MNIST (fashion_mnist, mnist_family30, pretraining) and typefaces (pretraining).
DEBIAN_PACKAGES="dataset-fashion-mnist fonts-dejavu-core fonts-dejavu-extra fonts-liberation2 fonts-freefont-ttf fonts-urw-base35"
MISSING=""
for package in $DEBIAN_PACKAGES; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || MISSING="$MISSING $package"
done
if [ -n "$MISSING" ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="$(command -v sudo || true)"; fi
    if [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; then
        echo "== installing Debian packages:$MISSING"
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
        exec "$VENV/bin/python" sweeps/compare.py --bench digits_animals "$@"
        ;;
esac
