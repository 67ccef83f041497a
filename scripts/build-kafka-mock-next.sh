#!/usr/bin/env bash
# Builds tools/kafka-mock/bin/kafka-mock-next: the same mock cluster program as
# tools/kafka-mock/bin/kafka-mock, linked statically against librdkafka 2.12.0
# with tools/kafka-mock/librdkafka-2.12.0-mock-fixes.patch, so that clients
# that need ApiVersions v3 (@platformatic/kafka) can produce to it, and so that
# clients can create topics: the bench's client comparison (npm run bench --
# --only=kafka-clients), the relay tests that run with that client and the
# topic-creation tests; every other test uses Debian's librdkafka (the stock
# build, scripts/build-kafka-mock.sh). The sources come from the npm registry:
# node-rdkafka 3.6.1 bundles librdkafka 2.12.0. Skipped when the binary is newer
# than the patch, the program and this script; the build takes about a minute on two cores.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/tools/kafka-mock/bin/kafka-mock-next"
patch_file="$root/tools/kafka-mock/librdkafka-2.12.0-mock-fixes.patch"
program="$root/tools/kafka-mock/kafka-mock.c"
if [[ -x "$out" && ! "$patch_file" -nt "$out" && ! "$program" -nt "$out" && ! "${BASH_SOURCE[0]}" -nt "$out" ]]; then
  exit 0
fi

bash "$root/scripts/ensure-apt-packages.sh" gcc libc6-dev make patch zlib1g-dev

# A directory of this run's own: two builds at once do not share one.
work="$(mktemp -d "$root/tools/kafka-mock/bin/librdkafka-2.12.0.XXXXXX")"
trap 'rm -rf "$work"' EXIT
fail() {
  echo "build-kafka-mock-next: $1; the last lines of $2:" >&2
  tail -n 30 "$2" >&2
  exit 1
}
(cd "$work" && npm pack --silent node-rdkafka@3.6.1 >/dev/null && tar xzf node-rdkafka-3.6.1.tgz)
src="$work/package/deps/librdkafka"
# The patch is made for this version (0x020c00ff: 2.12.0, a release).
grep -q '^#define RD_KAFKA_VERSION 0x020c00ff' "$src/src/rdkafka.h" || {
  echo "build-kafka-mock-next: $src is not librdkafka 2.12.0" >&2
  exit 1
}
(cd "$src" && patch -s -p1 < "$patch_file")
(cd "$src" && ./configure --disable-ssl --disable-gssapi --disable-zstd --disable-lz4-ext --disable-curl \
  --prefix="$work/install" > "$work/configure.log" 2>&1) || fail "configure failed" "$work/configure.log"
(cd "$src/src" && make -j2 > "$work/make.log" 2>&1 && make install >> "$work/make.log" 2>&1) ||
  fail "make failed" "$work/make.log"
# Static, so that the binary does not depend on the build directory removed below.
gcc -O2 -Wall -I"$work/install/include" -o "$out.tmp.$$" "$program" "$work/install/lib/librdkafka.a" \
  $(PKG_CONFIG_PATH="$work/install/lib/pkgconfig" pkg-config --static --libs-only-other --libs-only-l rdkafka-static 2>/dev/null ||
    echo "-lpthread -lz -lm -ldl")
mv -f "$out.tmp.$$" "$out"
echo "build-kafka-mock-next: built $out" >&2
