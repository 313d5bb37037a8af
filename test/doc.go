// Package test holds raftproxy's multi-process integration tests: they build
// the raftproxy binary, run real redis-server and raftproxy processes on
// loopback ports, and drive them over RESP.
//
// Run them with
//
//	go test ./test/... -count=1 -v -timeout 15m
//
// Set RAFTPROXY_BIN to test a prebuilt binary instead of building one, and
// RAFTPROXY_TEST_LOG_LEVEL to change the nodes' --log-level (default info).
package test
