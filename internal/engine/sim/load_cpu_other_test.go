//go:build !unix

package sim

import "time"

// busyCPU is not measured on this platform.
func busyCPU() time.Duration { return 0 }
