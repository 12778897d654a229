package train

import (
	"fmt"
	"math"
)

// Schedule is a learning-rate schedule: linear warmup from 0 to Peak over Warmup steps, then a
// decay to Floor at step Total.
//
//	lr(t) = Peak * t / Warmup                               for t < Warmup
//	lr(t) = Floor + (Peak - Floor) * decay((t - W) / (T - W)) for Warmup <= t < Total
//	lr(t) = Floor                                           for t >= Total
//
// with decay(x) = (1 + cos(pi x)) / 2 (cosine), 1 - x (linear) or 1 (constant). The first update
// (t = 0) uses lr(0), which is 0 when Warmup > 0.
type Schedule struct {
	Peak, Floor float64
	Warmup      int64
	Total       int64
	Decay       string // "cosine", "linear" or "constant"
}

// Decays lists the valid values of Schedule.Decay.
var Decays = []string{"cosine", "linear", "constant"}

// Validate returns an error naming the first invalid field.
func (s Schedule) Validate() error {
	switch {
	case !(s.Peak > 0) || math.IsInf(s.Peak, 0):
		return fmt.Errorf("invalid learning rate %g: it must be positive and finite", s.Peak)
	case s.Floor < 0 || s.Floor > s.Peak:
		return fmt.Errorf("invalid final learning rate %g: it must be in [0, %g]", s.Floor, s.Peak)
	case s.Warmup < 0:
		return fmt.Errorf("invalid warmup %d: it must be 0 or more steps", s.Warmup)
	case s.Total < 1:
		return fmt.Errorf("invalid number of steps %d: it must be at least 1", s.Total)
	}
	switch s.Decay {
	case "cosine", "linear", "constant":
		return nil
	}
	return fmt.Errorf("invalid learning-rate decay %q: use cosine, linear or constant", s.Decay)
}

// At returns the learning rate of step t (0-based).
func (s Schedule) At(t int64) float64 {
	if t < s.Warmup {
		return s.Peak * float64(t) / float64(s.Warmup)
	}
	if t >= s.Total {
		if s.Decay == "constant" {
			return s.Peak
		}
		return s.Floor
	}
	span := s.Total - s.Warmup
	x := float64(t-s.Warmup) / float64(span)
	var decay float64
	switch s.Decay {
	case "cosine":
		decay = (1 + math.Cos(math.Pi*x)) / 2
	case "linear":
		decay = 1 - x
	default:
		decay = 1
	}
	return s.Floor + (s.Peak-s.Floor)*decay
}
