#!/usr/bin/env bash
# Debian's Python gRPC (python3-grpcio, python3-grpc-tools) and Kafka client
# (python3-confluent-kafka, on Debian's librdkafka) for the cross-language
# tests: stock clients in another language, their stubs compiled from api/ at
# test time. Installs them only when missing.
set -euo pipefail

if ! /usr/bin/python3 -c "import grpc, grpc_tools.protoc, google.protobuf, confluent_kafka" >/dev/null 2>&1; then
  bash "$(dirname "$0")/ensure-apt-packages.sh" python3 python3-grpcio python3-grpc-tools python3-protobuf \
    python3-confluent-kafka
fi
