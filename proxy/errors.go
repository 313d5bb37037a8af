package proxy

// Error replies raftproxy gives in several places. Those redis defines are
// its texts byte for byte; the others are RedisRaft's.
const (
	// errSyntax is redis's answer to arguments it cannot parse.
	errSyntax = "ERR syntax error"
	// errNotInteger is redis's answer to a number argument that is not one.
	errNotInteger = "ERR value is not an integer or out of range"
	// errNoCluster answers cluster commands before the node has joined a
	// cluster (RedisRaft's text).
	errNoCluster = "NOCLUSTER No Raft Cluster"
	// errNoLeader answers requests that need a leader while there is none
	// (RedisRaft's text).
	errNoLeader = "CLUSTERDOWN No raft leader"
)
