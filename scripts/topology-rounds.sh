#!/usr/bin/env bash
# Three interleaved rounds of the same cells on three topologies: loopback, netns
# (--clients 1) and ssh (server and client host 127.0.0.1, through an sshd this script
# starts with throwaway keys), one compare per topology per round, 1 repeat each, so the
# order is A B C A B C A B C with a fresh server per cell. Needs root, iproute2 and
# openssh-server (scripts/install-deps.sh --ci).
#
# Usage: scripts/topology-rounds.sh OUT_DIR [SUITE]   (default suite: the one in
# results/loopback-vs-netns.suite.toml). Results: OUT_DIR/{lo,ns,ssh}{1,2,3}/*.json
set -euo pipefail
cd "$(dirname "$0")/.."
H=${HARNESS:-target/release/harness}
D=$(mkdir -p "$1" && cd "$1" && pwd)
SUITE=${2:-results/loopback-vs-netns.suite.toml}
ssh-keygen -q -t ed25519 -N '' -f $D/host_key; ssh-keygen -q -t ed25519 -N '' -f $D/user_key
cp $D/user_key.pub $D/authorized_keys; mkdir -p /run/sshd
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'ListenAddress 127.0.0.1\nHostKey %s\nAuthorizedKeysFile %s\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\nPidFile %s\n' $D/host_key $D/authorized_keys $D/sshd.pid > $D/sshd_config
SSH_TEST=(-p $PORT -i $D/user_key -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no)
/usr/sbin/sshd -D -e -f $D/sshd_config -p $PORT 2>/dev/null & SSHD=$!
trap 'kill $SSHD' EXIT
for _ in $(seq 50); do ssh -q -o BatchMode=yes -o ConnectTimeout=1 "${SSH_TEST[@]}" 127.0.0.1 true 2>/dev/null && break; sleep 0.1; done
SSH=(--ssh-opt Port=$PORT --ssh-opt IdentityFile=$D/user_key --ssh-opt UserKnownHostsFile=/dev/null --ssh-opt StrictHostKeyChecking=no --ssh-opt LogLevel=ERROR)
COMMON=(compare --suite "$SUITE" --repeats 1 --backends epoll-et,uring-multishot --no-plots)
for r in 1 2 3; do
  mkdir -p $D/lo$r $D/ns$r $D/ssh$r
  $H "${COMMON[@]}" --out $D/lo$r > $D/lo$r.log 2>&1
  $H "${COMMON[@]}" --topology netns --clients 1 --out $D/ns$r > $D/ns$r.log 2>&1
  $H "${COMMON[@]}" --topology ssh --server-host 127.0.0.1 --client-hosts 127.0.0.1 "${SSH[@]}" --out $D/ssh$r > $D/ssh$r.log 2>&1
done
