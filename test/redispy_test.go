package test

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// redisPyCluster is a redis-py RedisCluster session: it discovers the
// topology from one node, then writes and reads keys in many slots and a
// multi-key command on one hash tag.
const redisPyCluster = `
import sys
from redis.cluster import RedisCluster
host, port = sys.argv[1], int(sys.argv[2])
rc = RedisCluster(host=host, port=port, decode_responses=True)
for i in range(50):
    rc.set("py:%d" % i, str(i))
for i in range(50):
    assert rc.get("py:%d" % i) == str(i), i
rc.mset({"{py}a": "1", "{py}b": "2"})
assert rc.mget("{py}a", "{py}b") == ["1", "2"]
assert rc.incr("py:counter") == 1
# Pub/Sub: the subscription goes to the channel's slot's node, PUBLISH to
# whichever node redis-py picks; every message arrives once.
import time
ps = rc.pubsub()
ps.subscribe("py:news")
deadline = time.time() + 10
while time.time() < deadline:
    m = ps.get_message(timeout=1.0)
    if m and m["type"] == "subscribe":
        break
else:
    raise AssertionError("no subscribe confirmation")
for i in range(5):
    rc.publish("py:news", "m%d" % i)
got = []
while len(got) < 5 and time.time() < deadline + 10:
    m = ps.get_message(timeout=1.0)
    if m and m["type"] == "message":
        got.append(m["data"])
assert sorted(got) == ["m%d" % i for i in range(5)], got
ps.close()
nodes = rc.get_nodes()
print(len(nodes), rc.get_default_node().port)
`

// TestRedisPyCluster: redis-py's RedisCluster (cluster mode is decided by
// INFO's cluster_enabled and CLUSTER SLOTS) works unchanged against a
// follower, with follower-proxy off so that every write is redirected.
func TestRedisPyCluster(t *testing.T) {
	py, err := exec.LookPath("/usr/bin/python3")
	if err == nil {
		err = exec.Command(py, "-c", "from redis.cluster import RedisCluster").Run()
	}
	if err != nil {
		t.Skipf("redis-py is not installed for /usr/bin/python3 (make deps installs python3-redis): %v", err)
	}
	ctx := testContext(t, 2*time.Minute)
	c := StartCluster(ctx, t, ClusterOptions{ExtraArgs: []string{"--follower-proxy=false"}})
	leader, followers := c.Leader(ctx)
	host, port, _ := strings.Cut(followers[0].Addr, ":")
	out, err := exec.CommandContext(ctx, py, "-c", redisPyCluster, host, port).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-py RedisCluster through %s: %v\n%s", followers[0], err, out)
	}
	t.Logf("redis-py: %s", strings.TrimSpace(string(out)))
	if v, err := leader.Client().Get(ctx, "py:49").Result(); err != nil || v != "49" {
		t.Errorf("GET py:49 on the leader = %q, %v", v, err)
	}
	if err := c.WaitConverged(ctx); err != nil {
		t.Fatal(err)
	}
	c.AssertRedisIdentical(ctx)
}
