#!/usr/bin/env bash
# Debian's Python gRPC (python3-grpcio, python3-grpc-tools) for the
# cross-language client test: a stock client in another language, its stubs
# compiled from api/ at test time. Installs them only when missing.
set -euo pipefail

if ! /usr/bin/python3 -c "import grpc, grpc_tools.protoc, google.protobuf" >/dev/null 2>&1; then
  bash "$(dirname "$0")/ensure-apt-packages.sh" python3 python3-grpcio python3-grpc-tools python3-protobuf
fi
