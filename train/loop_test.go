package train

import (
	"fmt"
	"math"
	"testing"

	"github.com/looksam/vitsam/datasets"
	"github.com/looksam/vitsam/optimizers/looksam"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRunStopsOnNaNLoss(t *testing.T) {
	// Tag every image with its index in pixel 0, find the first example of the batch at step 3,
	// and give it a NaN pixel: steps 0 to 2 are finite, and the loss of step 3 is NaN.
	const badStep = 3
	d := syntheticDataset(96, 9)
	size := d.ExampleSize()
	for i := range d.Len() {
		d.Images[i*size] = float32(i)
	}
	cfg := tinyConfig(looksam.RuleLookSAM, 5)
	it := newIterator(t, d, cfg, badStep)
	b, ok := it.Next()
	require.True(t, ok)
	require.Equal(t, int64(badStep), b.Step)
	bad := int(b.Images[0])
	d.Images[bad*size+size/2] = float32(math.NaN())

	dir := t.TempDir()
	tr, err := NewTrainer(testBackend, cfg)
	require.NoError(t, err)
	summary, err := Run(tr, RunOptions{Train: d, Steps: 6, CheckpointDir: dir, CheckpointEvery: 1})
	require.Error(t, err)
	assert.Contains(t, err.Error(), fmt.Sprintf("step %d (%s): loss is NaN", badStep, tr.Kind(badStep)))
	assert.Equal(t, int64(badStep+1), tr.Step(), "the trainer took the bad step")

	// The newest checkpoint is from before the bad step, and it restores finite weights.
	latest, err := LatestCheckpoint(dir)
	require.NoError(t, err)
	assert.Equal(t, latest, summary.LastCheckpoint)
	restored, err := NewTrainer(testBackend, cfg)
	require.NoError(t, err)
	require.NoError(t, restored.Restore(latest))
	assert.Equal(t, int64(badStep), restored.Step())
	for name, values := range weights(t, restored) {
		for i, v := range values {
			require.False(t, math.IsNaN(float64(v)) || math.IsInf(float64(v), 0), "%s[%d] = %v", name, i, v)
		}
	}
	loss, _, err := restored.Evaluate(finiteCopy(d, bad))
	require.NoError(t, err)
	assert.False(t, math.IsNaN(loss), "test loss of the restored weights")
}

// finiteCopy returns d without example bad.
func finiteCopy(d *datasets.Dataset, bad int) *datasets.Dataset {
	size := d.ExampleSize()
	out := *d
	out.Images = append(append([]float32{}, d.Images[:bad*size]...), d.Images[(bad+1)*size:]...)
	out.Labels = append(append([]int32{}, d.Labels[:bad]...), d.Labels[bad+1:]...)
	return &out
}

func TestRunWithAugmentation(t *testing.T) {
	// A run over RandAugment with mixup takes its steps and logs finite losses.
	d := syntheticDataset(64, 10)
	cfg := tinyConfig(looksam.RuleLookSAM, 5)
	cfg.Mixup = 0.2
	tr, err := NewTrainer(testBackend, cfg)
	require.NoError(t, err)
	augment := &datasets.RandAugment{Source: &datasets.PadCropFlip{Dataset: d, Pad: 2}, N: 2, Magnitude: 9}
	summary, err := Run(tr, RunOptions{Train: d, Test: d, Augment: augment, Workers: 2, Steps: 3})
	require.NoError(t, err)
	assert.Equal(t, int64(3), summary.Steps)
	assert.False(t, math.IsNaN(summary.TestLoss))
}
