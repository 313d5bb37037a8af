package proxy

import (
	"errors"
	"testing"
)

func TestSupportedRedis(t *testing.T) {
	for v, ok := range map[string]bool{"7.0.15": true, "7.0.0": true, "7.0": true, "7.2.4": false, "7.4.1": false, "8.0.2": false, "6.2.14": false, "70.0.1": false, "": false} {
		err := SupportedRedis(v)
		if (err == nil) != ok || (err != nil && !errors.Is(err, ErrUnsupportedRedis)) {
			t.Errorf("SupportedRedis(%q) = %v, want ok %v", v, err, ok)
		}
	}
}
