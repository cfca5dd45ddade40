# Sourced by the GPU-host scripts: PY (the host's PyTorch python) and LD_LIBRARY_PATH with
# libtorch's lib/, NVRTC and the CUDA runtime, so a `repro` built against libtorch 2.11 runs there.
PY=${PYTHON:-/opt/torch/.venv/bin/python3}
[ -x "$PY" ] || PY=python3
TORCH_LIB=$("$PY" -c 'import torch, os; print(os.path.dirname(torch.__file__) + "/lib")')
NVRTC=$(find "$(dirname "$(dirname "$TORCH_LIB")")" /usr/local/cuda/lib64 -name 'libnvrtc.so*' 2>/dev/null | head -n 1)
export LD_LIBRARY_PATH="$TORCH_LIB${NVRTC:+:$(dirname "$NVRTC")}:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
