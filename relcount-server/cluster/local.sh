#!/usr/bin/env bash
# A local cluster on loopback: 3 nats-server nodes (one JetStream cluster) and 3
# relcount-server hosts owning 4 of 12 partitions each. Ctrl-C stops every process.
#
#   relcount-server/cluster/local.sh            # build, start, print a curl line
#   RELCOUNT_TOKEN=... DIR=/tmp/rc relcount-server/cluster/local.sh
#
# Needs nats-server (Debian: apt-get install nats-server).
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR="${DIR:-$(mktemp -d /tmp/relcount-cluster.XXXX)}"
TOKEN="${RELCOUNT_TOKEN:-local-cluster-token}"
NATS="$(command -v nats-server || echo /usr/sbin/nats-server)"
[ -x "$NATS" ] || { echo "nats-server is not installed (apt-get install nats-server)" >&2; exit 1; }
cargo build --release -p relcount-server --features cluster
SECONDS=0
pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; echo "stopped; data in $DIR"; }
trap stop EXIT INT TERM
routes="nats-route://127.0.0.1:6250, nats-route://127.0.0.1:6251, nats-route://127.0.0.1:6252"
for i in 0 1 2; do
  cat > "$DIR/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:424$i
http: 127.0.0.1:822$i
jetstream { store_dir: "$DIR/n$i" }
cluster { name: relcount-local, listen: 127.0.0.1:625$i, routes: [$routes] }
CONF
  "$NATS" -c "$DIR/n$i.conf" > "$DIR/n$i.log" 2>&1 &
  pids+=($!)
done
nats="nats://127.0.0.1:4240,nats://127.0.0.1:4241,nats://127.0.0.1:4242"
owns=("0,3,6,9" "1,4,7,10" "2,5,8,11")
for i in 0 1 2; do
  RELCOUNT_TOKEN="$TOKEN" target/release/relcount-server --addr "127.0.0.1:818$i" \
    --cluster "$nats" --partitions 12 --owns "${owns[$i]}" --data "$DIR/host$i" \
    > "$DIR/host$i.log" 2>&1 &
  pids+=($!)
done
for i in 0 1 2; do
  until grep -q "relcount serving" "$DIR/host$i.log"; do
    kill -0 "${pids[$((i + 3))]}" 2>/dev/null || { cat "$DIR/host$i.log"; exit 1; }
    sleep 0.2
  done
done
cat <<MSG
3 NATS nodes (127.0.0.1:4240-4242) and 3 hosts (http://127.0.0.1:8180-8182) are up
after ${SECONDS} s; logs and data in $DIR.

NATS monitoring: http://127.0.0.1:8220/jsz?streams=true lists the streams and their
leaders (8221, 8222: the other nodes); each host's partitions: http://127.0.0.1:8180/cluster

Any host takes any call, e.g.:

curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8180/api/v1.1/relations/define -d '{"rel_id": 3, "db_a": 1, "db_b": 2, "props": {"Donate": {"type": "int", "top": 10}}}'
curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8181/api/v1.1/relations/attach -d '{"rel_id": 3, "profile_a": {"profile_id": "5c910f6bc484d023b1309bee"}, "profile_b": {"profile_id": "5c910938c484d023b1309bab"}, "weights": {"Donate": 20}}'
curl -s -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8182/api/v1.1/relations/get_counter -d '{"rel_id": 3, "profile_id": "5c910f6bc484d023b1309bee"}'

Ctrl-C stops them all.
MSG
wait
