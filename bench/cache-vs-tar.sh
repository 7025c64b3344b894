#!/bin/bash
# Save and restore of a node_modules-like tree (about 30,000 files, 200 MB) through bosun's whole
# path (bosun quickstart --repo: server, launch-agent, task-agent, socket, HTTP, blob store) beside
# `tar -I 'zstd -1 -T0'` and `tar czf`/`xzf` of the same tree, in the same run, three rounds.
# Trees and extractions live on tmpfs (/dev/shm), so disk writeback does not swamp the figures.
# Usage: cargo build --release --bins && bash bench/cache-vs-tar.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/target/release
GEN=$PWD/crates/task-agent/examples/node_modules_tree.py
W=$(mktemp -d /tmp/measure-XXXX); chmod 755 $W
REPO=$W/repo; mkdir -p $REPO/.circleci
cp $GEN $REPO/gen_tree.py
cat > $REPO/.circleci/config.yml <<'YAML'
version: 2.1
jobs:
  save:
    machine: true
    resource_class: bosun/quickstart
    working_directory: /dev/shm/m-save
    steps:
      - checkout:
          path: /dev/shm/m-save
      - run: python3 gen_tree.py . && find node_modules -type f | wc -l
      - run: sync
      - save_cache:
          key: tree-{{ .BuildNum }}
          paths: [node_modules]
  restore:
    machine: true
    resource_class: bosun/quickstart
    working_directory: /dev/shm/m-restore
    steps:
      - run: sync
      - restore_cache:
          keys:
            - tree-
      - run: find node_modules -type f | wc -l && du -s --apparent-size node_modules
workflows:
  m:
    jobs:
      - save
      - restore:
          requires: [save]
YAML
(cd $REPO && git init -q -b main && git add . && git -c user.email=m@x -c user.name=m commit -qm m)
for round in 1 2 3; do
  $BIN/bosun quickstart --repo $REPO --data-dir $W/data-$round > $W/run-$round.log 2>&1 || { tail -50 $W/run-$round.log; exit 1; }
  echo "round $round"
  grep -E "Saving Cache: success|Restoring Cache: success|Stored cache|Unarchived" $W/run-$round.log
  du -sb $W/data-$round/server/blobs/caches | cut -f1 | sed 's/^/stored cache bytes: /'
  # The same tree, by tar, in this round.
  T=/dev/shm/tar-$round; mkdir -p $T/src && (cd $T/src && python3 $REPO/gen_tree.py . 2>/dev/null)
  sync
  s=$(date +%s.%N); (cd $T/src && tar -I 'zstd -1 -T0' -cf $T/tree.tar.zst node_modules); e=$(date +%s.%N)
  echo "tar zstd -1 -T0 create: $(echo "$e - $s" | bc) s, $(stat -c %s $T/tree.tar.zst) bytes"
  sync; mkdir $T/x1; s=$(date +%s.%N); (cd $T/x1 && tar -I 'zstd -T0' -xf $T/tree.tar.zst); e=$(date +%s.%N)
  echo "tar zstd extract: $(echo "$e - $s" | bc) s"
  sync
  s=$(date +%s.%N); (cd $T/src && tar czf $T/tree.tgz node_modules); e=$(date +%s.%N)
  echo "tar czf create: $(echo "$e - $s" | bc) s, $(stat -c %s $T/tree.tgz) bytes"
  sync; mkdir $T/x2; s=$(date +%s.%N); (cd $T/x2 && tar xzf $T/tree.tgz); e=$(date +%s.%N)
  echo "tar xzf extract: $(echo "$e - $s" | bc) s"
  rm -rf $T $W/data-$round/work /dev/shm/m-save /dev/shm/m-restore
done
rm -rf "$W"
