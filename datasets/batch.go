package datasets

import (
	"fmt"
	"math/bits"
	"math/rand/v2"
	"sync"
)

// DefaultPrefetch is the number of batches an Iterator prepares ahead when IteratorOptions.Prefetch is 0.
const DefaultPrefetch = 2

// IteratorOptions configures NewIterator.
type IteratorOptions struct {
	// BatchSize is the number of examples per batch. It must be positive.
	BatchSize int

	// Shuffle makes each epoch visit the examples in an order drawn from Seed and the epoch
	// number. Without it every epoch visits them in dataset order and Seed is unused.
	Shuffle bool
	Seed    uint64

	// DropLast skips the last batch of each epoch when it would hold fewer than BatchSize
	// examples, so that every batch has the same shape. Use it for training.
	DropLast bool

	// Epochs is the number of passes over the dataset. 0 repeats until Close.
	Epochs int

	// StartStep is the global step of the first batch, for resuming a run: the iterator yields
	// exactly the batches that a fresh iterator with the same options yields from this step on.
	StartStep int64

	// Prefetch is the number of batches prepared ahead in the background. 0 means DefaultPrefetch.
	// One more batch may be in preparation, so up to Prefetch+1 batches are in memory besides the
	// one the caller holds.
	Prefetch int
}

// Position locates a batch in the sequence an Iterator yields.
type Position struct {
	// Epoch is the pass over the dataset, from 0.
	Epoch int
	// Index is the batch's index within its epoch, from 0.
	Index int
	// Step is the batch's index over all epochs, from 0: Epoch*BatchesPerEpoch() + Index.
	Step int64
}

// Batch is a group of examples ready to feed a model. Each batch has its own slices, so the
// caller may keep or modify them.
type Batch struct {
	// Images holds the examples' pixels as one flat slice with shape Shape, NHWC.
	Images []float32
	// Labels holds the examples' class indices, shape [Size].
	Labels []int32
	// Size is the number of examples: BatchSize, or fewer in the last batch of an epoch when
	// DropLast is off.
	Size int
	// Shape is the shape of Images: [Size, Height, Width, Channels].
	Shape [4]int
	// Targets holds soft class targets, shape [Size, classes], each row summing to 1, as Mixup
	// writes them. It is nil when the labels are the only targets.
	Targets []float32

	Position
}

// Iterator yields the batches of a Dataset, prepared by a background goroutine. A Pipeline yields
// the same batches from several goroutines, and also serves augmented and on-disk sources.
//
// Next and Position must be called from one goroutine, and Close from any. Call Close when done
// with the iterator unless Next has returned false, because the background goroutine stays
// blocked otherwise.
type Iterator struct {
	dataset  *Dataset
	schedule *schedule

	batches   chan Batch
	done      chan struct{} // closed by Close to stop the producer
	finished  chan struct{} // closed when the producer has returned
	closeOnce sync.Once

	nextStep int64 // step of the batch the next call to Next returns
}

// NewIterator starts an iterator over d. The dataset must not change while the iterator runs.
func NewIterator(d *Dataset, options IteratorOptions) (*Iterator, error) {
	if err := validateDataset(d); err != nil {
		return nil, err
	}
	s, err := newSchedule(d.String(), d.Len(), options)
	if err != nil {
		return nil, err
	}
	it := &Iterator{
		dataset:  d,
		schedule: s,
		batches:  make(chan Batch, s.options.Prefetch),
		done:     make(chan struct{}),
		finished: make(chan struct{}),
		nextStep: options.StartStep,
	}
	go it.produce()
	return it, nil
}

// BatchesPerEpoch returns the number of batches in an epoch over numExamples examples:
// numExamples / batchSize rounded down with dropLast, rounded up without. batchSize must be
// positive. The batch at (epoch, index) has the global step epoch*BatchesPerEpoch(...) + index.
func BatchesPerEpoch(numExamples, batchSize int, dropLast bool) int {
	if dropLast {
		return numExamples / batchSize
	}
	return (numExamples + batchSize - 1) / batchSize
}

// validateDataset checks that the slices of d agree with its shape.
func validateDataset(d *Dataset) error {
	if d.Height <= 0 || d.Width <= 0 || d.Channels <= 0 {
		return fmt.Errorf("invalid dataset %s: image shape %dx%dx%d must be positive",
			d, d.Height, d.Width, d.Channels)
	}
	if len(d.Images) != d.Len()*d.ExampleSize() {
		return fmt.Errorf("invalid dataset %s: %d image values for %d labels of %dx%dx%d images, expected %d",
			d, len(d.Images), d.Len(), d.Height, d.Width, d.Channels, d.Len()*d.ExampleSize())
	}
	return nil
}

// Next returns the next batch, or false when the last epoch is done or the iterator is closed.
func (it *Iterator) Next() (Batch, bool) {
	select {
	case <-it.done:
		return Batch{}, false
	default:
	}
	batch, ok := <-it.batches
	if !ok {
		return Batch{}, false
	}
	it.nextStep = batch.Step + 1
	return batch, true
}

// Position returns the position of the batch that the next call to Next returns. Passing its Step
// as IteratorOptions.StartStep to a new iterator with the same options resumes from there.
func (it *Iterator) Position() Position { return it.PositionAt(it.nextStep) }

// PositionAt returns the epoch and the index within the epoch of the batch at global step.
func (it *Iterator) PositionAt(step int64) Position { return it.schedule.positionAt(step) }

// BatchesPerEpoch returns the number of batches in each epoch.
func (it *Iterator) BatchesPerEpoch() int { return it.schedule.batchesPerEpoch }

// Close stops the background goroutine and waits for it to return. Later calls to Next return
// false. Close is safe to call more than once.
func (it *Iterator) Close() {
	it.closeOnce.Do(func() { close(it.done) })
	<-it.finished
}

// produce prepares batches from the start step on and sends them until the last epoch ends or
// Close is called.
func (it *Iterator) produce() {
	defer close(it.finished)
	defer close(it.batches)

	for step := it.schedule.options.StartStep; !it.schedule.ended(step); step++ {
		select {
		case <-it.done:
			return
		default:
		}
		position, examples := it.schedule.batch(step)
		batch := makeBatch(it.dataset, examples)
		batch.Position = position

		select {
		case it.batches <- batch:
		case <-it.done:
			return
		}
	}
}

// makeBatch copies the examples at indices into a new batch.
func makeBatch(d *Dataset, indices []int) Batch {
	size := d.ExampleSize()
	batch := Batch{
		Images: make([]float32, len(indices)*size),
		Labels: make([]int32, len(indices)),
		Size:   len(indices),
		Shape:  [4]int{len(indices), d.Height, d.Width, d.Channels},
	}
	for i, example := range indices {
		copy(batch.Images[i*size:(i+1)*size], d.Images[example*size:(example+1)*size])
		batch.Labels[i] = d.Labels[example]
	}
	return batch
}

// epochOrder returns the order in which an epoch visits the n examples. With shuffle it is a
// permutation that depends only on (seed, epoch), so any epoch can be rebuilt without replaying
// the ones before it.
//
// The shuffle is a Fisher-Yates shuffle over a PCG source, with bounded draws written here
// rather than taken from rand.Rand, whose methods may change their output between Go versions
// and differ between 32- and 64-bit platforms. A resumed run therefore gets the same order on
// any platform, and TestEpochOrderGolden fails if a Go release changes the output of PCG.
func epochOrder(n int, shuffle bool, seed uint64, epoch int) []int {
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	if !shuffle {
		return order
	}
	source := rand.NewPCG(seed, mix64(uint64(epoch)))
	for i := n - 1; i > 0; i-- {
		j := uniformBelow(source, uint64(i+1))
		order[i], order[j] = order[j], order[i]
	}
	return order
}

// uniformBelow returns a uniform draw from [0, n), n > 0, by Lemire's multiply-and-reject method
// (D. Lemire, "Fast Random Integer Generation in an Interval", ACM TOMACS 29(1), 2019).
func uniformBelow(source *rand.PCG, n uint64) uint64 {
	high, low := bits.Mul64(source.Uint64(), n)
	if low < n {
		// Reject the 2^64 mod n products that would make low values more likely than high ones.
		threshold := -n % n
		for low < threshold {
			high, low = bits.Mul64(source.Uint64(), n)
		}
	}
	return high
}

// mix64 is the finalizer of the SplitMix64 generator. It spreads consecutive epoch numbers over the
// whole 64-bit range, so that consecutive epochs do not seed PCG with states that differ by one.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
