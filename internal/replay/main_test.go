package replay

import (
	"testing"

	"go.uber.org/goleak"
)

// RunLive starts a router, its HTTP server and one goroutine per request: none may outlive it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
