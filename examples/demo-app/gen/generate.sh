#!/bin/sh
# Deterministic demo content, generated at build time from a seed (busybox sh + awk + xxd, no network):
#   OUT/model/models/weights.bin  a "model": a 4 KiB JSON header naming its tensors, then WEIGHTS_MB MiB of
#                           incompressible bytes (a 256 KiB pseudo-random block from awk's srand(SEED),
#                           repeated with a 16-byte label per block: gzip's 32 KiB window cannot shrink it)
#   OUT/model/models/config.json  the model's small config
#   OUT/lib/app/lib/demo_*/...    a library tree: PACKAGES packages x MODULES modules of generated Python text
# Every file and directory gets the same mtime, so layers made by `COPY --from=... OUT/lib/ /` (whole trees,
# no directory created by COPY itself) are byte-identical on a rebuild.
set -eu
SEED="$1" WEIGHTS_MB="$2" OUT="$3"
PACKAGES="${PACKAGES:-40}" MODULES="${MODULES:-24}"
BLOCK=262144
MODELS="$OUT/model/models" LIB="$OUT/lib/app/lib"
mkdir -p "$MODELS" "$LIB"

awk -v seed="$SEED" -v n="$BLOCK" 'BEGIN { srand(seed); for (i = 0; i < n; i++) printf "%02x", int(rand() * 256) }' \
  | xxd -r -p > /tmp/block.bin
blocks=$((WEIGHTS_MB * 1048576 / BLOCK))
# tensors: embed = blocks [0, 8), layer.N = 4 blocks each, lm_head = the last 8 blocks
awk -v blocks="$blocks" -v block="$BLOCK" -v seed="$SEED" 'BEGIN {
  printf "{\"format\": \"demo-model/1\", \"seed\": %d, \"block\": %d, \"tensors\": [", seed, block
  off = 4096
  printf "{\"name\": \"embed\", \"offset\": %d, \"size\": %d}", off, 8 * block; off += 8 * block
  for (l = 0; off + 4 * block <= 4096 + (blocks - 8) * block; l++) {
    printf ", {\"name\": \"layer.%d\", \"offset\": %d, \"size\": %d}", l, off, 4 * block; off += 4 * block
  }
  printf ", {\"name\": \"lm_head\", \"offset\": %d, \"size\": %d}]}\n", off, 4096 + blocks * block - off
}' > /tmp/header.json
head -c 4096 /dev/zero | cat /tmp/header.json - | head -c 4096 > "$MODELS/weights.bin"
i=0
while [ "$i" -lt "$blocks" ]; do
  printf 'block %09d\n' "$i"
  head -c $((BLOCK - 16)) /tmp/block.bin
  i=$((i + 1))
done >> "$MODELS/weights.bin"
printf '{"name": "demo", "seed": %d, "size_mb": %d, "dtype": "int8"}\n' "$SEED" "$WEIGHTS_MB" > "$MODELS/config.json"

awk -v seed="$SEED" -v packages="$PACKAGES" -v modules="$MODULES" -v out="$LIB" 'BEGIN {
  srand(seed + 1)
  for (p = 0; p < packages; p++) {
    dir = sprintf("%s/demo_%02d", out, p)
    system("mkdir -p " dir)
    init = dir "/__init__.py"
    printf "\"\"\"demo package %d (generated).\"\"\"\n__all__ = [", p > init
    for (m = 0; m < modules; m++) printf "\"mod_%02d\", ", m > init
    print "]" > init
    close(init)
    for (m = 0; m < modules; m++) {
      file = sprintf("%s/mod_%02d.py", dir, m)
      printf "\"\"\"demo_%02d.mod_%02d (generated).\"\"\"\n\nTABLE = [\n", p, m > file
      for (k = 0; k < 160; k++) printf "    %d, %d, %d, %d, %d, %d, %d, %d,\n", rand()*1e9, rand()*1e9, rand()*1e9, rand()*1e9, rand()*1e9, rand()*1e9, rand()*1e9, rand()*1e9 > file
      printf "]\n\n\ndef handler_%d(x):\n    return TABLE[x %% len(TABLE)] * %d\n", m, p + 1 > file
      close(file)
    }
  }
}'
find "$OUT" -exec touch -h -d "2020-01-01 00:00:00" {} \;
