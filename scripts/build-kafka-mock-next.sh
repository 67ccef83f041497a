#!/usr/bin/env bash
# Builds tools/kafka-mock/bin/kafka-mock-next: the same mock cluster program as
# tools/kafka-mock/bin/kafka-mock, linked against librdkafka 2.12.0 with
# tools/kafka-mock/librdkafka-2.12.0-apiversions-v3.patch, so that clients that
# need ApiVersions v3 (@platformatic/kafka) can produce to it. Only the bench's
# client comparison uses it (npm run bench -- --only=kafka-clients); tests use
# Debian's librdkafka. The sources come from the npm registry: node-rdkafka
# 3.6.1 bundles librdkafka 2.12.0. Idempotent; the build takes a few minutes.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/tools/kafka-mock/bin/kafka-mock-next"
patch_file="$root/tools/kafka-mock/librdkafka-2.12.0-apiversions-v3.patch"
work="$root/tools/kafka-mock/bin/librdkafka-2.12.0"
[[ -x "$out" && ! "$patch_file" -nt "$out" && ! "$root/tools/kafka-mock/kafka-mock.c" -nt "$out" ]] && exit 0

rm -rf "$work" && mkdir -p "$work"
(cd "$work" && npm pack --silent node-rdkafka@3.6.1 >/dev/null && tar xzf node-rdkafka-3.6.1.tgz)
src="$work/package/deps/librdkafka"
# The patch is made for this version (0x020c00ff = 2.12.0 release).
grep -q '^#define RD_KAFKA_VERSION 0x020c00ff' "$src/src/rdkafka.h" || {
  echo "build-kafka-mock-next: $src is not librdkafka 2.12.0" >&2
  exit 1
}
(cd "$src" && patch -s -p1 < "$patch_file")
(cd "$src" && ./configure --disable-ssl --disable-gssapi --disable-zstd --disable-lz4-ext --disable-curl \
  --prefix="$work/install" > "$work/configure.log" 2>&1)
(cd "$src/src" && make -j2 > "$work/make.log" 2>&1 && make install >> "$work/make.log" 2>&1)
gcc -O2 -Wall -Wextra -I"$work/install/include" -o "$out.tmp" "$root/tools/kafka-mock/kafka-mock.c" \
  -L"$work/install/lib" -Wl,-rpath,"$work/install/lib" -lrdkafka
mv -f "$out.tmp" "$out"
echo "build-kafka-mock-next: built $out" >&2
