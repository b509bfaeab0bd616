//go:build !linux

package preciseprefix

import "time"

// threadCPU is not measured outside Linux; the CPU metrics then read 0.
func threadCPU() time.Duration { return 0 }
