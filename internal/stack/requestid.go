package stack

import (
	"crypto/rand"
	"encoding/hex"
)

// newRequestID returns an id shaped like OpenAI's x-request-id: "req_" and 32 hex digits.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "req_" + hex.EncodeToString(b[:])
}

// validRequestID accepts a client's X-Request-Id when it is 1..128 characters of
// [A-Za-z0-9._:-]; anything else is replaced, since the id is a metering key and appears in logs.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}
