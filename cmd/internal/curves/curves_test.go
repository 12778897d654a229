package curves

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/looksam/vitsam/optimizers/looksam"
	"github.com/looksam/vitsam/train"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writeMetrics writes the records as JSON lines to dir/metrics.jsonl, the way train.Run does,
// and returns the path.
func writeMetrics(t *testing.T, dir string, records ...any) string {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	path := filepath.Join(dir, "metrics.jsonl")
	var buf bytes.Buffer
	encoder := json.NewEncoder(&buf)
	for _, r := range records {
		require.NoError(t, encoder.Encode(r))
	}
	require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
	return path
}

func step(n int64, loss, elapsed float64) train.StepRecord {
	return train.StepRecord{Type: "train", Step: n, Kind: looksam.KindPlain, Loss: loss, Elapsed: elapsed,
		Diagnostics: map[string]float64{"loss": loss}}
}

func eval(n int64, accuracy, elapsed float64) train.EvalRecord {
	return train.EvalRecord{Type: "eval", Step: n, Split: "test", Accuracy: accuracy, Elapsed: elapsed}
}

func TestReadMetricsJoinsResumedStretches(t *testing.T) {
	// The first stretch logs steps 0-3 and evaluations at steps 2 and 4. The run then resumes
	// from the checkpoint at step 2 and logs steps 2-4 with a new clock, so the records of steps
	// 2-3 and the evaluation at step 4 are replaced.
	path := writeMetrics(t, t.TempDir(),
		step(0, 4, 1), step(1, 3, 2), eval(2, 0.5, 2.5), step(2, 2.5, 3), step(3, 2.4, 4), eval(4, 0.6, 4.5),
		step(2, 2, 1), step(3, 1, 2), step(4, 0.5, 3), eval(5, 0.7, 3.5),
	)
	curves, err := readMetrics(path)
	require.NoError(t, err)
	assert.Equal(t, []point{
		{step: 0, seconds: 1, value: 4}, {step: 1, seconds: 2, value: 3},
		{step: 2, seconds: 5.5, value: 2}, {step: 3, seconds: 6.5, value: 1}, {step: 4, seconds: 7.5, value: 0.5},
	}, curves.train)
	assert.Equal(t, []point{{step: 2, seconds: 2.5, value: 50}, {step: 5, seconds: 8, value: 70}}, curves.eval)
}

func TestSmoothedIsDebiasedAverage(t *testing.T) {
	// Weight 0.5: m_1 = 0.5*2 = 1, m_2 = 0.5*1 + 0.5*4 = 2.5, m_3 = 0.5*2.5 + 0.5*5 = 3.75,
	// divided by 1 - 0.5^i = 0.5, 0.75, 0.875.
	points := []point{{value: 2}, {value: 4}, {value: 5}}
	got := smoothed(points, 0.5)
	want := []float64{2, 2.5 / 0.75, 3.75 / 0.875}
	for i := range want {
		assert.InDelta(t, want[i], got[i].value, 1e-12, "point %d", i)
	}
	assert.Equal(t, points, smoothed(points, 0), "weight 0 keeps the raw values")
}
