package vllm_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// zmq4 v0.17.0 never stops a PUB socket's writer goroutine (pubSocket.Close does not close
	// its pubMWriter): one per simulated replica that published KV events.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/go-zeromq/zmq4.(*pubMWriter).run"))
}
