package train

import (
	"math"
	"testing"

	"github.com/looksam/vitsam/optimizers/looksam"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBackendParity trains the same small ViT for six LookSAM-2 steps (three SAM and three reuse
// steps) on the pure-Go backend and on XLA with one device, and compares every weight, optimizer
// buffer and g_v, and the diagnostics of each step.
func TestBackendParity(t *testing.T) {
	xla := newCPUBackend(t, 1)
	cfg := parallelConfig(looksam.RuleLookSAM, 2, 1)
	const steps = 6

	run := func(name string, tr *Trainer) []StepResult {
		var results []StepResult
		for step := range steps {
			r, err := tr.TrainStep(testBatch(cfg.BatchSize, uint64(step)))
			require.NoError(t, err, "%s: step %d", name, step)
			results = append(results, r)
		}
		return results
	}
	onGo, err := NewTrainer(testBackend, cfg)
	require.NoError(t, err)
	onXLA, err := NewTrainer(xla, cfg)
	require.NoError(t, err)
	goResults, xlaResults := run("go", onGo), run("xla", onXLA)

	for step := range steps {
		for _, name := range looksam.Diagnostics {
			want, got := goResults[step].Diagnostics[name], xlaResults[step].Diagnostics[name]
			if finite(want) || finite(got) {
				assert.InDelta(t, want, got, 1e-5+1e-4*math.Abs(want), "step %d (%s): %s", step, goResults[step].Kind, name)
			}
		}
	}
	assertAllClose(t, floatVariables(t, onGo), floatVariables(t, onXLA), 1e-6, 1e-4, "pure Go vs XLA after 6 steps")
}
