package train

import "github.com/looksam/vitsam/datasets"

// trainBatches yields the training batches of Run.
type trainBatches interface {
	Next() (datasets.Batch, bool)
	// Err returns the error that made Next return false, or nil.
	Err() error
	Close()
}

// openTrainBatches starts the training batches of Run from the trainer's step: a
// datasets.Iterator over opts.Train, or a datasets.Pipeline over opts.Augment when it is set. Both
// shuffle with the trainer's seed and drop the last partial batch of each epoch.
func openTrainBatches(t *Trainer, opts RunOptions) (trainBatches, error) {
	options := datasets.IteratorOptions{
		BatchSize: t.cfg.BatchSize, Shuffle: true, Seed: t.cfg.Seed, DropLast: true,
		StartStep: t.Step(), Prefetch: opts.Prefetch,
	}
	if opts.Augment != nil {
		pipeline, err := datasets.NewPipeline(opts.Augment, datasets.PipelineOptions{IteratorOptions: options, Workers: opts.Workers})
		if err != nil {
			return nil, err
		}
		return pipeline, nil
	}
	it, err := datasets.NewIterator(opts.Train, options)
	if err != nil {
		return nil, err
	}
	return iteratorBatches{it}, nil
}

// iteratorBatches adds Err to a datasets.Iterator, which has no errors after it starts.
type iteratorBatches struct{ *datasets.Iterator }

// Err returns nil.
func (iteratorBatches) Err() error { return nil }
