package datasets

import "fmt"

// schedule maps global steps to the examples of their batches. The Iterator and the Pipeline
// share it, so that for the same options both visit the examples in the same order.
//
// positionAt and ended may be called from any goroutine. batch caches the order of the current
// epoch, so only one goroutine may call it.
type schedule struct {
	numExamples     int
	options         IteratorOptions // with Prefetch set to its default when it was 0
	batchesPerEpoch int
	totalSteps      int64 // -1 when Epochs is 0

	order      []int // order of epoch orderEpoch, nil before the first call to batch
	orderEpoch int
}

// newSchedule checks options against a source of numExamples examples. name identifies the source
// in error messages.
func newSchedule(name string, numExamples int, options IteratorOptions) (*schedule, error) {
	switch {
	case options.BatchSize <= 0:
		return nil, fmt.Errorf("invalid batch size %d: it must be positive", options.BatchSize)
	case options.Epochs < 0:
		return nil, fmt.Errorf("invalid number of epochs %d: it must be positive, or 0 to repeat until Close", options.Epochs)
	case options.StartStep < 0:
		return nil, fmt.Errorf("invalid start step %d: it must be 0 or more", options.StartStep)
	case options.Prefetch < 0:
		return nil, fmt.Errorf("invalid prefetch depth %d: it must be positive, or 0 for the default of %d",
			options.Prefetch, DefaultPrefetch)
	}
	if options.Prefetch == 0 {
		options.Prefetch = DefaultPrefetch
	}

	batchesPerEpoch := BatchesPerEpoch(numExamples, options.BatchSize, options.DropLast)
	if batchesPerEpoch == 0 {
		return nil, fmt.Errorf("%s has %d examples, fewer than one batch of %d; lower the batch size or turn DropLast off",
			name, numExamples, options.BatchSize)
	}
	totalSteps := int64(-1)
	if options.Epochs > 0 {
		totalSteps = int64(options.Epochs) * int64(batchesPerEpoch)
		if options.StartStep > totalSteps {
			return nil, fmt.Errorf("start step %d is past the end of %d epochs of %d batches (%d steps)",
				options.StartStep, options.Epochs, batchesPerEpoch, totalSteps)
		}
	}
	return &schedule{
		numExamples:     numExamples,
		options:         options,
		batchesPerEpoch: batchesPerEpoch,
		totalSteps:      totalSteps,
		orderEpoch:      -1,
	}, nil
}

// positionAt returns the epoch and the index within the epoch of the batch at global step.
func (s *schedule) positionAt(step int64) Position {
	perEpoch := int64(s.batchesPerEpoch)
	return Position{Epoch: int(step / perEpoch), Index: int(step % perEpoch), Step: step}
}

// ended reports whether step is past the last batch of the last epoch.
func (s *schedule) ended(step int64) bool {
	return s.totalSteps >= 0 && step >= s.totalSteps
}

// batch returns the position of the batch at step and the indices of its examples. The slice
// shares memory with the cached epoch order: read it before the next call.
func (s *schedule) batch(step int64) (Position, []int) {
	position := s.positionAt(step)
	if position.Epoch != s.orderEpoch {
		s.order = epochOrder(s.numExamples, s.options.Shuffle, s.options.Seed, position.Epoch)
		s.orderEpoch = position.Epoch
	}
	start := position.Index * s.options.BatchSize
	end := min(start+s.options.BatchSize, len(s.order))
	return position, s.order[start:end]
}
