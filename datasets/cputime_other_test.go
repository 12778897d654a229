//go:build !unix

package datasets

import "time"

// processCPUTime returns 0: this system's CPU time is not read, and benchmarks skip the metric.
func processCPUTime() time.Duration { return 0 }
