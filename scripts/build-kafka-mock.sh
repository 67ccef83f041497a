#!/usr/bin/env bash
# Builds tools/kafka-mock/bin/kafka-mock (a librdkafka mock Kafka cluster for
# tests). Idempotent: installs librdkafka-dev only when its mock header is
# missing, and recompiles only when the binary is missing or older than the
# source.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/tools/kafka-mock/kafka-mock.c"
out="$root/tools/kafka-mock/bin/kafka-mock"
header=/usr/include/librdkafka/rdkafka_mock.h

if [[ ! -f "$header" ]] || ! command -v gcc >/dev/null; then
  echo "build-kafka-mock: installing librdkafka-dev and gcc" >&2
  sudo_cmd=()
  if [[ "$(id -u)" -ne 0 ]]; then sudo_cmd=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends librdkafka-dev gcc libc6-dev
fi

if [[ -x "$out" && ! "$src" -nt "$out" ]]; then
  exit 0
fi

mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
gcc -O2 -Wall -Wextra -o "$tmp" "$src" -lrdkafka
mv -f "$tmp" "$out"
echo "build-kafka-mock: built $out" >&2
