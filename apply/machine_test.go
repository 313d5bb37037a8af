package apply

import "testing"

func TestNullReplyOfOneCommandTx(t *testing.T) {
	for raw, want := range map[string]bool{"*1\r\n*-1\r\n": true, "*1\r\n$-1\r\n": true, "*1\r\n_\r\n": true,
		"*1\r\n$1\r\nx\r\n": false, "*-1\r\n": false, "*1\r\n-ERR x\r\n": false} {
		var passed []byte
		var null bool
		reply := nullReply(func(b []byte) { passed = b }, &null)
		reply([]byte(raw))
		if null != want || string(passed) != raw {
			t.Errorf("%q: null %v, passed on %q", raw, null, passed)
		}
	}
	var null bool
	nullReply(nil, &null)([]byte("*1\r\n_\r\n"))
	if !null {
		t.Error("without a client reply: null not noted")
	}
}
