package observe

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/raftproxy/raftproxy/raftnode"
)

func TestEndpoints(t *testing.T) {
	h := Handler(raftnode.NewHost(raftnode.Config{DataDir: t.TempDir()}))
	tests := []struct {
		path string
		code int
		want []string
	}{
		// The Go and process series come from the default registry once:
		// registering them twice makes every scrape fail.
		{"/metrics", 200, []string{"raftproxy_has_leader 0", "go_goroutines ", "process_cpu_seconds_total "}},
		{"/livez", 200, []string{"ok"}},
		{"/readyz", 503, []string{"[failed] cluster"}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
			body, _ := io.ReadAll(rec.Body)
			if rec.Code != tt.code {
				t.Fatalf("GET %s: status %d, want %d; body:\n%s", tt.path, rec.Code, tt.code, body)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(body), w) {
					t.Errorf("GET %s: body lacks %q:\n%.2000s", tt.path, w, body)
				}
			}
		})
	}
}
