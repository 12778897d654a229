package datasets

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
)

// PipelineOptions configures NewPipeline.
type PipelineOptions struct {
	// IteratorOptions sets the batching, the shuffle, the start step and the number of epochs as
	// for an Iterator: the same options visit the examples in the same order. Prefetch is the
	// number of batches queued ahead of the caller. Seed also seeds the random augmentation of
	// the source, with or without Shuffle.
	IteratorOptions

	// Workers is the number of goroutines that produce examples. 0 means runtime.GOMAXPROCS(0).
	// The batches do not depend on it.
	Workers int
}

// Pipeline yields the batches of a Source, producing their examples on worker goroutines.
//
// Batches come out in step order and their content depends only on the source, the seed, the
// epoch and the examples' indices: example i of epoch e gets a random source seeded from
// (Seed, e, i). The same options therefore give the same batches with any number of workers,
// and a pipeline started at StartStep yields what one started at 0 yields from that step on.
//
// Next, Err and Position must be called from one goroutine, and Close from any. Call Close when
// done with the pipeline: it stops the goroutines and waits for them to return.
type Pipeline struct {
	source   Source
	schedule *schedule
	shape    [3]int

	pending   chan *pendingBatch // batches in step order, at most Prefetch of them
	tasks     chan exampleTask
	done      chan struct{} // closed by Close, or by Next after an error, to stop the goroutines
	closeOnce sync.Once
	running   sync.WaitGroup // the dispatcher and the workers

	nextStep int64
	err      error
}

// pendingBatch is a batch whose examples the workers are producing.
type pendingBatch struct {
	batch     Batch
	errs      []error // one per example, each written by the worker that produced it
	remaining atomic.Int64
	ready     chan struct{} // closed when the last example is written
}

// exampleTask is the request to a worker for one example of a batch.
type exampleTask struct {
	batch   *pendingBatch
	slot    int // position in the batch
	example int // index in the source
}

// NewPipeline starts a pipeline over source.
func NewPipeline(source Source, options PipelineOptions) (*Pipeline, error) {
	if options.Workers < 0 {
		return nil, fmt.Errorf("invalid number of workers %d: it must be positive, or 0 for GOMAXPROCS", options.Workers)
	}
	if options.Workers == 0 {
		options.Workers = runtime.GOMAXPROCS(0)
	}
	switch s := source.(type) {
	case *Dataset:
		if err := validateDataset(s); err != nil {
			return nil, err
		}
	case *PadCropFlip:
		if err := validateDataset(s.Dataset); err != nil {
			return nil, err
		}
		if s.Pad < 0 {
			return nil, fmt.Errorf("invalid padding %d for %s: it must be 0 or more", s.Pad, s.Dataset)
		}
	}
	shape := source.ExampleShape()
	if shape[0] <= 0 || shape[1] <= 0 || shape[2] <= 0 {
		return nil, fmt.Errorf("invalid source %s: image shape %dx%dx%d must be positive",
			sourceName(source), shape[0], shape[1], shape[2])
	}
	s, err := newSchedule(sourceName(source), source.Len(), options.IteratorOptions)
	if err != nil {
		return nil, err
	}

	p := &Pipeline{
		source:   source,
		schedule: s,
		shape:    shape,
		pending:  make(chan *pendingBatch, s.options.Prefetch),
		tasks:    make(chan exampleTask, options.Workers),
		done:     make(chan struct{}),
		nextStep: options.StartStep,
	}
	p.running.Add(1 + options.Workers)
	go p.dispatch()
	for range options.Workers {
		go p.work()
	}
	return p, nil
}

// sourceName returns the source's String, or its type when it has none.
func sourceName(source Source) string {
	if s, ok := source.(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprintf("source %T", source)
}

// Next returns the next batch. It returns false when the last epoch is done, when the pipeline is
// closed, or when an example failed. In the last case Err returns the error.
func (p *Pipeline) Next() (Batch, bool) {
	if p.err != nil {
		return Batch{}, false
	}
	select {
	case <-p.done:
		return Batch{}, false
	default:
	}

	var pb *pendingBatch
	select {
	case b, ok := <-p.pending:
		if !ok {
			return Batch{}, false
		}
		pb = b
	case <-p.done:
		return Batch{}, false
	}
	select {
	case <-pb.ready:
	case <-p.done:
		return Batch{}, false
	}

	// Report the failure of the first example in batch order, so that the error does not depend
	// on which worker finished first.
	for _, err := range pb.errs {
		if err != nil {
			p.err = fmt.Errorf("batch at step %d of %s: %w", pb.batch.Step, sourceName(p.source), err)
			p.stop()
			return Batch{}, false
		}
	}
	p.nextStep = pb.batch.Step + 1
	return pb.batch, true
}

// Err returns the error that made Next return false, or nil when it returned false because the
// last epoch was done or the pipeline was closed.
func (p *Pipeline) Err() error { return p.err }

// Position returns the position of the batch that the next call to Next returns. Passing its Step
// as StartStep to a new pipeline with the same options resumes from there.
func (p *Pipeline) Position() Position { return p.PositionAt(p.nextStep) }

// PositionAt returns the epoch and the index within the epoch of the batch at global step.
func (p *Pipeline) PositionAt(step int64) Position { return p.schedule.positionAt(step) }

// BatchesPerEpoch returns the number of batches in each epoch.
func (p *Pipeline) BatchesPerEpoch() int { return p.schedule.batchesPerEpoch }

// Close stops the goroutines and waits for them to return, which takes at most the time of the
// examples being produced. Later calls to Next return false. Close is safe to call more than once.
func (p *Pipeline) Close() {
	p.stop()
	p.running.Wait()
}

// stop signals the goroutines to return.
func (p *Pipeline) stop() { p.closeOnce.Do(func() { close(p.done) }) }

// dispatch queues the batches from the start step on, and hands their examples to the workers,
// until the last epoch ends or the pipeline stops. It closes tasks when it returns, which makes
// the workers return.
func (p *Pipeline) dispatch() {
	defer p.running.Done()
	defer close(p.tasks)
	defer close(p.pending)

	exampleSize := p.shape[0] * p.shape[1] * p.shape[2]
	for step := p.schedule.options.StartStep; !p.schedule.ended(step); step++ {
		position, examples := p.schedule.batch(step)
		n := len(examples)
		pb := &pendingBatch{
			batch: Batch{
				Images:   make([]float32, n*exampleSize),
				Labels:   make([]int32, n),
				Size:     n,
				Shape:    [4]int{n, p.shape[0], p.shape[1], p.shape[2]},
				Position: position,
			},
			errs:  make([]error, n),
			ready: make(chan struct{}),
		}
		pb.remaining.Store(int64(n))

		// Queue the batch before its examples, because the bounded queue is what keeps the
		// dispatcher from running ahead when the caller is slower than the workers.
		select {
		case p.pending <- pb:
		case <-p.done:
			return
		}
		for slot, example := range examples {
			select {
			case p.tasks <- exampleTask{batch: pb, slot: slot, example: example}:
			case <-p.done:
				return
			}
		}
	}
}

// work produces the examples that dispatch hands out until it closes tasks. After the pipeline
// stops it skips the remaining tasks, because no caller reads their batches.
func (p *Pipeline) work() {
	defer p.running.Done()
	exampleSize := p.shape[0] * p.shape[1] * p.shape[2]
	var rng rand.PCG
	for task := range p.tasks {
		select {
		case <-p.done:
			continue
		default:
		}
		pb := task.batch
		seedExampleRand(&rng, p.schedule.options.Seed, pb.batch.Epoch, task.example)
		image := pb.batch.Images[task.slot*exampleSize : (task.slot+1)*exampleSize]
		label, err := p.source.Example(task.example, &rng, image)
		if err != nil {
			pb.errs[task.slot] = fmt.Errorf("example %d: %w", task.example, err)
		}
		pb.batch.Labels[task.slot] = label
		if pb.remaining.Add(-1) == 0 {
			close(pb.ready)
		}
	}
}
