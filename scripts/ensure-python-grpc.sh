#!/usr/bin/env bash
# Debian's Python gRPC (python3-grpcio, python3-grpc-tools) for the
# cross-language client test: a stock client in another language, its stubs
# compiled from api/ at test time. Installs them only when missing.
set -euo pipefail

if ! /usr/bin/python3 -c "import grpc, grpc_tools.protoc, google.protobuf" >/dev/null 2>&1; then
  echo "ensure-python-grpc: installing python3-grpcio and python3-grpc-tools" >&2
  sudo_cmd=()
  if [[ "$(id -u)" -ne 0 ]]; then sudo_cmd=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends python3 python3-grpcio python3-grpc-tools python3-protobuf
fi
