package train

import (
	"math"
	"testing"

	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:staticcheck // GoMLX graph code reads best with the ops unqualified.
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/looksam/vitsam/optimizers/looksam"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMixupTargetsFoldSmoothing(t *testing.T) {
	// Every example is class 3, so the mixed targets are the smoothed one-hot vector itself:
	// 1 - 0.1 + 0.1/10 = 0.91 at class 3 and 0.1/10 = 0.01 elsewhere.
	cfg := tinyConfig(looksam.RuleNone, 0)
	cfg.Mixup, cfg.LabelSmoothing = 0.2, 0.1
	tr, err := NewTrainer(testBackend, cfg)
	require.NoError(t, err)
	b, ok := newIterator(t, syntheticDataset(64, 6), cfg, 0).Next()
	require.True(t, ok)
	for i := range b.Labels {
		b.Labels[i] = 3
	}

	_, targets, err := tr.stepInputs(b)
	require.NoError(t, err)
	require.Equal(t, []int{cfg.BatchSize, 10}, targets.Shape().Dimensions)
	values := tensors.MustCopyFlatData[float32](targets)
	for i := range cfg.BatchSize {
		for k := range 10 {
			want := 0.01
			if k == 3 {
				want = 0.91
			}
			assert.InDelta(t, want, values[i*10+k], 1e-6, "example %d, class %d", i, k)
		}
	}
}

func TestMixupStepLossIsSoftCrossEntropy(t *testing.T) {
	d := syntheticDataset(256, 7)
	cfg := tinyConfig(looksam.RuleLookSAM, 5)
	cfg.Mixup, cfg.LabelSmoothing = 0.4, 0.1
	tr, err := NewTrainer(testBackend, cfg)
	require.NoError(t, err)
	it := newIterator(t, d, cfg, 0)
	runSteps(t, tr, it, 1) // a SAM step, which also creates the variables

	// The inputs of step 1, mixed and smoothed as TrainStep will mix them.
	b, ok := it.Next()
	require.True(t, ok)
	images, targets, err := tr.stepInputs(b)
	require.NoError(t, err)
	y := tensors.MustCopyFlatData[float32](targets)

	// Logits at the current weights, from a separate evaluation program.
	logitsExec, err := context.NewExecAny(testBackend, tr.Context().Reuse(), func(ctx *context.Context, images *Node) *Node {
		logits, _ := tr.model.Logits(ctx.In(ModelScope), images, false, nil)
		return logits
	})
	require.NoError(t, err)
	outputs, err := logitsExec.Exec(images)
	require.NoError(t, err)
	z := tensors.MustCopyFlatData[float32](outputs[0])

	// Soft cross-entropy in float64: mean over the batch of logsumexp(z) - sum_k y_k z_k, and the
	// share of rows whose logit argmax is the target argmax.
	const classes = 10
	var wantLoss float64
	correct := 0
	for i := range cfg.BatchSize {
		row, target := z[i*classes:(i+1)*classes], y[i*classes:(i+1)*classes]
		maxLogit := math.Inf(-1)
		for _, v := range row {
			maxLogit = math.Max(maxLogit, float64(v))
		}
		var sumExp, dot float64
		for k := range classes {
			sumExp += math.Exp(float64(row[k]) - maxLogit)
			dot += float64(target[k]) * float64(row[k])
		}
		wantLoss += (maxLogit + math.Log(sumExp) - dot) / float64(cfg.BatchSize)
		if argmax(row) == argmax(target) {
			correct++
		}
	}

	result, err := tr.TrainStep(b)
	require.NoError(t, err)
	assert.Equal(t, looksam.KindReuse, result.Kind)
	assert.InEpsilon(t, wantLoss, result.Loss, 1e-4, "loss of the mixup step")
	assert.InDelta(t, float64(correct)/float64(cfg.BatchSize), result.Accuracy, 1e-9, "accuracy against the target argmax")
	assert.Equal(t, map[looksam.StepKind]int{looksam.KindSAM: 1, looksam.KindReuse: 1}, tr.Builds(),
		"one program per step kind with soft targets")
}

func TestMixupOffRejectsSoftTargets(t *testing.T) {
	cfg := tinyConfig(looksam.RuleNone, 0)
	tr, err := NewTrainer(testBackend, cfg)
	require.NoError(t, err)
	b, ok := newIterator(t, syntheticDataset(32, 8), cfg, 0).Next()
	require.True(t, ok)
	b.Targets = make([]float32, b.Size*10)
	_, err = tr.TrainStep(b)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Config.Mixup is 0")
}

func TestConfigRejectsBadMixup(t *testing.T) {
	for _, alpha := range []float64{-0.1, math.NaN(), math.Inf(1)} {
		cfg := tinyConfig(looksam.RuleNone, 0)
		cfg.Mixup = alpha
		err := cfg.Validate()
		require.Error(t, err, "mixup %g", alpha)
		assert.Contains(t, err.Error(), "invalid mixup alpha")
	}
}

// argmax returns the index of the first maximum of values.
func argmax(values []float32) int {
	best := 0
	for i, v := range values {
		if v > values[best] {
			best = i
		}
	}
	return best
}
