# Sourced by the GPU scripts: start and stop an NVIDIA MPS daemon (CUDA's Multi-Process Service)
# for the processes started in between, so that their kernels run concurrently on the GPU instead
# of time-slicing. The daemon is this call's own (pipe and log under /tmp/dpzo-mps); nothing of
# the GPU's settings is changed.
mps_dir=/tmp/dpzo-mps
mps_start() {
  command -v nvidia-cuda-mps-control >/dev/null || { echo "no nvidia-cuda-mps-control" >&2; return 1; }
  mkdir -p "$mps_dir/pipe" "$mps_dir/log"
  export CUDA_MPS_PIPE_DIRECTORY=$mps_dir/pipe CUDA_MPS_LOG_DIRECTORY=$mps_dir/log
  nvidia-cuda-mps-control -d && sleep 1
}
mps_stop() {
  echo quit | nvidia-cuda-mps-control >/dev/null 2>&1
  sleep 1
  unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
}
