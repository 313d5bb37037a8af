package main

import (
	"github.com/raftproxy/raftproxy/proxy"
	"github.com/raftproxy/raftproxy/raftnode"
)

// hostCluster presents a raft host to the proxy as a proxy.Cluster. A host
// without a node gives a nil Group, not a Group holding a nil *Node.
type hostCluster struct{ h *raftnode.Host }

func group(n *raftnode.Node, err error) (proxy.Group, error) {
	if n == nil {
		return nil, err
	}
	return n, err
}

func (c hostCluster) Node() proxy.Group {
	g, _ := group(c.h.Node(), nil)
	return g
}

func (c hostCluster) Init() (proxy.Group, error) { return group(c.h.Init()) }

func (c hostCluster) InitAs(id uint64) (proxy.Group, error) { return group(c.h.InitAs(id)) }

func (c hostCluster) Join(clusterID, id uint64, members []raftnode.Member) (proxy.Group, error) {
	return group(c.h.Join(clusterID, id, members))
}
