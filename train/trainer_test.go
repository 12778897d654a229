package train

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/gomlx/gomlx/backends"
	_ "github.com/gomlx/gomlx/backends/simplego"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/janpfeifer/must"
	"github.com/looksam/vitsam/datasets"
	"github.com/looksam/vitsam/graphx/dotgrad"
	"github.com/looksam/vitsam/models/vit"
	"github.com/looksam/vitsam/optimizers/looksam"
	"github.com/looksam/vitsam/pjrt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testBackend is the pure-Go backend as cmd/train configures it, with the gradients of graphx/dotgrad
// installed, so the tests run the same graphs as training.
var testBackend = func() backends.Backend {
	dotgrad.Install()
	return must.M1(backends.NewWithConfig(pjrt.GoBackendConfig))
}()

// syntheticDataset returns n 28x28 images of 10 classes in which class c lights up the c-th band
// of rows, plus noise, so a small model separates them within a few dozen steps.
func syntheticDataset(n int, seed uint64) *datasets.Dataset {
	rng := rand.New(rand.NewPCG(seed, 1))
	d := &datasets.Dataset{Name: "synthetic", Height: 28, Width: 28, Channels: 1,
		Images: make([]float32, n*28*28), Labels: make([]int32, n)}
	d.ClassNames = []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}
	for i := range n {
		label := int32(rng.IntN(10))
		d.Labels[i] = label
		img := d.Images[i*784 : (i+1)*784]
		for r := range 28 {
			for c := range 28 {
				v := 0.2 * rng.Float32()
				if r/3 == int(label) {
					v += 0.8
				}
				img[r*28+c] = v
			}
		}
	}
	return d
}

func tinyConfig(rule looksam.Rule, k int) Config {
	return Config{
		Model:     vit.Presets["mnist-tiny"],
		Optimizer: looksam.Config{Rule: rule, Base: looksam.BaseAdamW, Rho: 0.05, Alpha: 0.7, K: k, WeightDecay: 0.01},
		Schedule:  Schedule{Peak: 3e-3, Warmup: 2, Total: 40, Decay: "cosine"},
		Seed:      11,
		BatchSize: 16,
	}
}

func newIterator(t *testing.T, d *datasets.Dataset, cfg Config, start int64) *datasets.Iterator {
	t.Helper()
	it, err := datasets.NewIterator(d, datasets.IteratorOptions{
		BatchSize: cfg.BatchSize, Shuffle: true, Seed: cfg.Seed, DropLast: true, StartStep: start})
	require.NoError(t, err)
	t.Cleanup(it.Close)
	return it
}

func runSteps(t *testing.T, tr *Trainer, it *datasets.Iterator, n int) []StepResult {
	t.Helper()
	var results []StepResult
	for range n {
		b, ok := it.Next()
		require.True(t, ok)
		r, err := tr.TrainStep(b)
		require.NoError(t, err)
		results = append(results, r)
	}
	return results
}

func weights(t *testing.T, tr *Trainer) map[string][]float32 {
	t.Helper()
	out := map[string][]float32{}
	for v := range tr.Context().IterVariables() {
		value := v.MustValue()
		if value.DType().IsFloat() {
			out[v.ScopeAndName()] = tensors.MustCopyFlatData[float32](value)
		}
	}
	return out
}

func TestLookSAMBuildsTwoPrograms(t *testing.T) {
	d := syntheticDataset(256, 1)
	cfg := tinyConfig(looksam.RuleLookSAM, 5)
	tr, err := NewTrainer(testBackend, cfg)
	require.NoError(t, err)
	results := runSteps(t, tr, newIterator(t, d, cfg, 0), 12)

	assert.Equal(t, map[looksam.StepKind]int{looksam.KindSAM: 1, looksam.KindReuse: 1}, tr.Builds())
	var kinds []looksam.StepKind
	for _, r := range results {
		kinds = append(kinds, r.Kind)
		assert.True(t, finite(r.Loss), "step %d loss %v", r.Step, r.Loss)
	}
	s, u := looksam.KindSAM, looksam.KindReuse
	assert.Equal(t, []looksam.StepKind{s, u, u, u, u, s, u, u, u, u, s, u}, kinds)
	assert.False(t, math.IsNaN(results[1].Diagnostics["g_v_norm"]), "a reuse step reads g_v")
	assert.Greater(t, results[1].Diagnostics["g_v_norm"], 0.0, "g_v was stored by step 0")
}

func TestTinyModelLearns(t *testing.T) {
	if testing.Short() {
		t.Skip("trains for 100 steps")
	}
	d := syntheticDataset(640, 2)
	cfg := tinyConfig(looksam.RuleLookSAM, 5)
	cfg.Optimizer.Alpha = 0.1
	cfg.Schedule.Total = 100
	cfg.Schedule.Peak = 1e-2
	tr, err := NewTrainer(testBackend, cfg)
	require.NoError(t, err)
	lossBefore, _, err := tr.Evaluate(d)
	require.NoError(t, err)
	runSteps(t, tr, newIterator(t, d, cfg, 0), 100)
	lossAfter, accuracy, err := tr.Evaluate(d)
	require.NoError(t, err)
	assert.Less(t, lossAfter, lossBefore/2, "loss %.3f -> %.3f", lossBefore, lossAfter)
	t.Logf("loss %.3f -> %.3f, accuracy %.3f", lossBefore, lossAfter, accuracy)
	assert.Greater(t, accuracy, 0.8)
}

func TestResumeMatchesStraightRun(t *testing.T) {
	d := syntheticDataset(256, 3)
	cfg := tinyConfig(looksam.RuleLookSAM, 5)
	cfg.Model.Dropout = 0.1 // the dropout RNG state must resume too
	const total = 12

	straight, err := NewTrainer(testBackend, cfg)
	require.NoError(t, err)
	runSteps(t, straight, newIterator(t, d, cfg, 0), total)
	want := weights(t, straight)

	for stop := 0; stop <= total; stop++ {
		dir := t.TempDir()
		first, err := NewTrainer(testBackend, cfg)
		require.NoError(t, err)
		runSteps(t, first, newIterator(t, d, cfg, 0), stop)
		_, err = first.SaveCheckpoint(dir, 2)
		require.NoError(t, err)

		paths, err := ListCheckpoints(dir)
		require.NoError(t, err)
		require.Len(t, paths, 1)
		resumed, err := NewTrainer(testBackend, cfg)
		require.NoError(t, err)
		require.NoError(t, resumed.Restore(paths[0]))
		require.Equal(t, int64(stop), resumed.Step())
		runSteps(t, resumed, newIterator(t, d, cfg, resumed.Step()), total-stop)
		assert.Equal(t, want, weights(t, resumed), "stopped after %d steps", stop)
	}
}

func TestCheckpointCrashKeepsPrevious(t *testing.T) {
	d := syntheticDataset(64, 4)
	cfg := tinyConfig(looksam.RuleLookSAM, 5)
	dir := t.TempDir()
	tr, err := NewTrainer(testBackend, cfg)
	require.NoError(t, err)
	runSteps(t, tr, newIterator(t, d, cfg, 0), 2)
	good, err := tr.SaveCheckpoint(dir, 3)
	require.NoError(t, err)

	// A write interrupted before its rename leaves only a temporary file, which is never listed.
	require.NoError(t, os.WriteFile(filepath.Join(dir, ".tmp-ckpt-0000000003.gob-123"), []byte("partial"), 0o644))
	paths, err := ListCheckpoints(dir)
	require.NoError(t, err)
	assert.Equal(t, []string{good}, paths)

	// A checkpoint damaged after it was written is reported with the fix.
	damaged := filepath.Join(dir, "ckpt-0000000009.gob")
	data, err := os.ReadFile(good)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(damaged, data[:len(data)/2], 0o644))
	other, err := NewTrainer(testBackend, cfg)
	require.NoError(t, err)
	err = other.Restore(damaged)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "damaged or truncated")
	assert.Contains(t, err.Error(), "delete it")
	require.NoError(t, other.Restore(good))
	assert.Equal(t, int64(2), other.Step())
}

func TestCheckpointKeepsNewest(t *testing.T) {
	d := syntheticDataset(64, 5)
	cfg := tinyConfig(looksam.RuleNone, 0)
	dir := t.TempDir()
	tr, err := NewTrainer(testBackend, cfg)
	require.NoError(t, err)
	it := newIterator(t, d, cfg, 0)
	for range 4 {
		runSteps(t, tr, it, 1)
		_, err := tr.SaveCheckpoint(dir, 2)
		require.NoError(t, err)
	}
	paths, err := ListCheckpoints(dir)
	require.NoError(t, err)
	assert.Equal(t, []string{filepath.Join(dir, "ckpt-0000000003.gob"), filepath.Join(dir, "ckpt-0000000004.gob")}, paths)
}

func TestScheduleEdges(t *testing.T) {
	cosine := Schedule{Peak: 1, Floor: 0, Warmup: 2, Total: 6, Decay: "cosine"}
	want := []float64{0, 0.5, 1, 0.853553, 0.5, 0.146447, 0, 0}
	for step, w := range want {
		assert.InDelta(t, w, cosine.At(int64(step)), 1e-6, "cosine step %d", step)
	}
	linear := cosine
	linear.Decay = "linear"
	assert.InDelta(t, 0.5, linear.At(4), 1e-12)

	long := Schedule{Peak: 1, Warmup: 10, Total: 10, Decay: "cosine"}
	for step := range int64(12) {
		assert.True(t, finite(long.At(step)), "warmup as long as the run, step %d", step)
	}
	for step := int64(6); step < 100; step++ {
		assert.LessOrEqual(t, cosine.At(step+1), cosine.At(step), "never rises after the end")
	}
}

func TestConfigRejectsBadValues(t *testing.T) {
	cases := []struct {
		mutate func(*Config)
		want   string
	}{
		{func(c *Config) { c.BatchSize = 0 }, "batch size 0"},
		{func(c *Config) { c.Optimizer.K = -2 }, "k=-2"},
		{func(c *Config) { c.Optimizer.Rho = -1 }, "rho=-1"},
		{func(c *Config) { c.Schedule.Peak = 0 }, "learning rate 0"},
		{func(c *Config) { c.Schedule.Decay = "step" }, `decay "step"`},
		{func(c *Config) { c.LabelSmoothing = 1 }, "label smoothing 1"},
	}
	for _, c := range cases {
		cfg := tinyConfig(looksam.RuleLookSAM, 5)
		c.mutate(&cfg)
		_, err := NewTrainer(testBackend, cfg)
		require.Error(t, err)
		assert.Contains(t, err.Error(), c.want)
	}
}
