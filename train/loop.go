package train

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/looksam/vitsam/datasets"
	"github.com/looksam/vitsam/optimizers/looksam"
)

// RunOptions configures Run.
type RunOptions struct {
	Train, Test *datasets.Dataset
	// Augment, when set, replaces Train as the source of the training examples: usually a
	// *datasets.PadCropFlip or *datasets.RandAugment over Train. A datasets.Pipeline runs it on
	// Workers goroutines (0 means GOMAXPROCS), visiting the examples in the order Train would.
	Augment datasets.Source
	Workers int
	// Steps is the total number of training steps; the run stops when the trainer reaches it.
	Steps int64
	// EvalEvery evaluates on Test every this many steps; 0 evaluates only at the end.
	EvalEvery int64
	// CheckpointDir receives a checkpoint every CheckpointEvery steps and at the end; "" disables
	// checkpoints. CheckpointKeep is how many to keep (0 keeps all).
	CheckpointDir   string
	CheckpointEvery int64
	CheckpointKeep  int
	// Metrics receives one JSON object per line for every step and every evaluation; may be nil.
	Metrics io.Writer
	// Progress receives the progress display; may be nil.
	Progress io.Writer
	// Prefetch is the number of batches prepared ahead of the training step.
	Prefetch int
}

// Summary is the outcome of Run.
type Summary struct {
	Steps          int64
	TestLoss       float64
	TestAccuracy   float64
	Elapsed        time.Duration
	LastCheckpoint string
}

// StepRecord is the JSON line written to the metrics file for a training step.
type StepRecord struct {
	Type         string             `json:"type"` // "train"
	Step         int64              `json:"step"`
	Epoch        int                `json:"epoch"`
	Kind         looksam.StepKind   `json:"kind"`
	LearningRate float64            `json:"lr"`
	Loss         float64            `json:"loss"`
	Accuracy     float64            `json:"accuracy"`
	Seconds      float64            `json:"seconds"`     // this step's wall time
	Elapsed      float64            `json:"elapsed"`     // seconds since the run (or resumption) started
	Diagnostics  map[string]float64 `json:"diagnostics"` // the optimizer's Diagnostics; NaN ones are omitted
}

// EvalRecord is the JSON line written to the metrics file for an evaluation.
type EvalRecord struct {
	Type     string  `json:"type"` // "eval"
	Step     int64   `json:"step"`
	Split    string  `json:"split"`
	Loss     float64 `json:"loss"`
	Accuracy float64 `json:"accuracy"`
	Elapsed  float64 `json:"elapsed"`
}

// Run trains from the trainer's current step up to opts.Steps, evaluating and checkpointing as
// configured. A NaN or infinite loss or diagnostic stops the run with an error that names the
// metric and the step. The checkpoints written before that step stay.
func Run(t *Trainer, opts RunOptions) (Summary, error) {
	start := time.Now()
	summary := Summary{}
	if opts.Steps < t.Step() {
		return summary, fmt.Errorf("the run is already at step %d, past the requested %d steps: raise the number of steps or use a new checkpoint directory", t.Step(), opts.Steps)
	}
	it, err := openTrainBatches(t, opts)
	if err != nil {
		return summary, err
	}
	defer it.Close()

	encoder := (*json.Encoder)(nil)
	if opts.Metrics != nil {
		encoder = json.NewEncoder(opts.Metrics)
	}
	bar := newProgress(opts.Progress, t.Step(), opts.Steps)

	evaluate := func() error {
		if opts.Test == nil {
			return nil
		}
		bar.note("evaluating on %d test images", opts.Test.Len())
		loss, accuracy, err := t.Evaluate(opts.Test)
		if err != nil {
			return err
		}
		summary.TestLoss, summary.TestAccuracy = loss, accuracy
		bar.note("step %d: test loss %.4f, test accuracy %.2f%%", t.Step(), loss, 100*accuracy)
		if encoder != nil {
			return encoder.Encode(EvalRecord{Type: "eval", Step: t.Step(), Split: opts.Test.Split.String(),
				Loss: loss, Accuracy: accuracy, Elapsed: time.Since(start).Seconds()})
		}
		return nil
	}
	checkpoint := func() error {
		if opts.CheckpointDir == "" {
			return nil
		}
		path, err := t.SaveCheckpoint(opts.CheckpointDir, opts.CheckpointKeep)
		if err != nil {
			return err
		}
		summary.LastCheckpoint = path
		return nil
	}

	for t.Step() < opts.Steps {
		batch, ok := it.Next()
		if !ok {
			if err := it.Err(); err != nil {
				return summary, fmt.Errorf("preparing the batch of step %d: %w", t.Step(), err)
			}
			return summary, fmt.Errorf("the training data ended at step %d, before step %d", t.Step(), opts.Steps)
		}
		result, err := t.TrainStep(batch)
		if err != nil {
			return summary, err
		}
		if name, value, bad := firstNonFinite(result); bad {
			return summary, fmt.Errorf("step %d (%s): %s is %v; training stopped, and the last checkpoint in %q is from before this step",
				result.Step, result.Kind, name, value, opts.CheckpointDir)
		}
		if encoder != nil {
			if err := encoder.Encode(stepRecord(result, batch.Epoch, time.Since(start))); err != nil {
				return summary, fmt.Errorf("writing metrics: %w", err)
			}
		}
		bar.update(result)

		done := t.Step()
		if opts.EvalEvery > 0 && done%opts.EvalEvery == 0 && done < opts.Steps {
			if err := evaluate(); err != nil {
				return summary, err
			}
		}
		if opts.CheckpointEvery > 0 && done%opts.CheckpointEvery == 0 && done < opts.Steps {
			if err := checkpoint(); err != nil {
				return summary, err
			}
		}
	}
	bar.finish()
	if err := evaluate(); err != nil {
		return summary, err
	}
	if err := checkpoint(); err != nil {
		return summary, err
	}
	summary.Steps = t.Step()
	summary.Elapsed = time.Since(start)
	return summary, nil
}

// firstNonFinite returns the first metric of r that is NaN or infinite. Diagnostics that a step
// kind does not compute are NaN by design and are skipped.
func firstNonFinite(r StepResult) (string, float64, bool) {
	if !finite(r.Loss) {
		return "loss", r.Loss, true
	}
	computed := map[looksam.StepKind][]string{
		looksam.KindPlain: {"grad_norm", "update_norm", "param_norm"},
		looksam.KindReuse: {"grad_norm", "g_v_norm", "update_norm", "param_norm"},
		looksam.KindSAM:   {"grad_norm", "perturbed_grad_norm", "perturbation_norm", "update_norm", "param_norm"},
	}
	for _, name := range computed[r.Kind] {
		if v, ok := r.Diagnostics[name]; ok && !finite(v) {
			return name, v, true
		}
	}
	return "", 0, false
}

func stepRecord(r StepResult, epoch int, elapsed time.Duration) StepRecord {
	diagnostics := map[string]float64{}
	for name, v := range r.Diagnostics {
		if finite(v) {
			diagnostics[name] = v
		}
	}
	return StepRecord{Type: "train", Step: r.Step, Epoch: epoch, Kind: r.Kind, LearningRate: r.LearningRate,
		Loss: r.Loss, Accuracy: r.Accuracy, Seconds: r.Duration.Seconds(), Elapsed: elapsed.Seconds(),
		Diagnostics: diagnostics}
}

// LatestCheckpoint returns the newest checkpoint in dir, or "" when there is none.
func LatestCheckpoint(dir string) (string, error) {
	paths, err := ListCheckpoints(dir)
	if err != nil || len(paths) == 0 {
		return "", err
	}
	return paths[len(paths)-1], nil
}

// OpenMetrics opens path for appending JSON lines, creating its directory.
func OpenMetrics(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating the directory of metrics file %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening metrics file %s: %w", path, err)
	}
	return f, nil
}
