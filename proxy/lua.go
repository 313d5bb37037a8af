package proxy

import _ "embed"

// Lua fragments that streams.go joins into scripts. Every script's source is
// a file under lua/, embedded as is: its text, and so the SHA redis caches
// it by, stays the same across versions.
var (
	//go:embed lua/xautoclaim.lua
	xautoclaimLua string
	//go:embed lua/xclaim.lua
	xclaimLua string
	//go:embed lua/xreadgroup_waited.lua
	xreadgroupWaitedLua string
)
