package train

import (
	"fmt"
	"math"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:staticcheck // GoMLX graph code reads best with the ops unqualified.
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/looksam/vitsam/datasets"
)

// With Config.Mixup > 0, the step programs take soft targets [batch, classes] float32 in place of
// integer labels [batch]. TrainStep mixes each batch with datasets.Mixup, seeded from (Seed, step),
// and label smoothing is folded into the targets before they are mixed. There is still one
// program per step kind, because the input shapes do not change from step to step. Evaluation
// always uses the integer labels.

// validateMixup returns an error for a negative or non-finite Mixup.
func (c Config) validateMixup() error {
	if c.Mixup < 0 || math.IsNaN(c.Mixup) || math.IsInf(c.Mixup, 0) {
		return fmt.Errorf("invalid mixup alpha %g: it must be positive and finite, or 0 for no mixup", c.Mixup)
	}
	return nil
}

// mixup returns the batch transform of the run; its Validate passes when Config.Validate does.
func (t *Trainer) mixup() datasets.Mixup {
	return datasets.Mixup{Alpha: t.cfg.Mixup, Classes: t.cfg.Model.Classes, Smoothing: t.cfg.LabelSmoothing, Seed: t.cfg.Seed}
}

// stepInputs returns the images and the targets that the step program of the current step takes
// for batch b: the batch's images and its integer labels, or with mixup, the mixed images and the
// soft targets [Size, classes]. A batch that already carries Targets is used as it is, with no
// further mixing or smoothing. b itself is not modified.
func (t *Trainer) stepInputs(b datasets.Batch) (images, targets *tensors.Tensor, err error) {
	if t.cfg.Mixup == 0 {
		if b.Targets != nil {
			return nil, nil, fmt.Errorf("batch at step %d has soft targets, but Config.Mixup is 0 and the step programs take integer labels: set Mixup, or clear the batch's Targets",
				t.step)
		}
		return tensors.FromFlatDataAndDimensions(b.Images, b.Shape[:]...), tensors.FromFlatDataAndDimensions(b.Labels, b.Size), nil
	}

	if b.Targets == nil {
		if b, err = t.mixup().Apply(b, t.step); err != nil {
			return nil, nil, err
		}
	}
	classes := t.cfg.Model.Classes
	if len(b.Targets) != b.Size*classes {
		return nil, nil, fmt.Errorf("batch at step %d has %d target values, expected %d examples x %d classes",
			t.step, len(b.Targets), b.Size, classes)
	}
	return tensors.FromFlatDataAndDimensions(b.Images, b.Shape[:]...), tensors.FromFlatDataAndDimensions(b.Targets, b.Size, classes), nil
}

// trainingLoss returns the per-example loss of a training step: the cross-entropy of logits
// against integer labels [batch] with label smoothing, or with mixup against the soft targets
// [batch, classes], which already include the smoothing.
func (t *Trainer) trainingLoss(logits, targets *Node) *Node {
	if t.cfg.Mixup > 0 {
		return softCrossEntropy(logits, targets)
	}
	return crossEntropy(logits, targets, t.cfg.LabelSmoothing)
}

// trainingCorrect returns the number of correct predictions of a training step, as float32. With
// mixup a prediction is correct when its argmax is the argmax of the soft target, the class with
// the larger mixing weight. An exact tie (lambda = 1/2 between two classes) counts the lower class
// index.
func (t *Trainer) trainingCorrect(logits, targets *Node) *Node {
	if t.cfg.Mixup > 0 {
		return correctCount(logits, ArgMax(targets, -1, dtypes.Int32), nil)
	}
	return correctCount(logits, targets, nil)
}
