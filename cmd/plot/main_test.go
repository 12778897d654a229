package main

import (
	"bytes"
	"encoding/json"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strings"
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

func TestPlotWritesFourFiles(t *testing.T) {
	root := t.TempDir()
	var first, second []any
	for n := range int64(50) {
		first = append(first, step(n, 2.3/float64(n+1), float64(n+1)))
		second = append(second, step(n, 2.3/float64(n+2), 2*float64(n+1)))
		if (n+1)%10 == 0 {
			first = append(first, eval(n+1, 0.5+float64(n)/200, float64(n+1)))
			second = append(second, eval(n+1, 0.4+float64(n)/200, 2*float64(n+1)))
		}
	}
	a := writeMetrics(t, filepath.Join(root, "sam"), first...)
	b := writeMetrics(t, filepath.Join(root, "looksam"), second...)

	out := filepath.Join(root, "curves.png")
	var stdout, stderr bytes.Buffer
	require.NoError(t, run([]string{"-out", out, a, b}, &stdout, &stderr), "stderr: %s", stderr.String())
	for _, name := range []string{"curves-loss-step.png", "curves-acc-step.png", "curves-loss-time.png", "curves-acc-time.png"} {
		path := filepath.Join(root, name)
		assert.Contains(t, stdout.String(), path)
		file, err := os.Open(path)
		require.NoError(t, err, "missing %s", name)
		img, err := png.Decode(file)
		require.NoError(t, err, "decoding %s", name)
		require.NoError(t, file.Close())
		assert.Equal(t, 7*96, img.Bounds().Dx(), "%s width", name)
		assert.Equal(t, int(4.5*96), img.Bounds().Dy(), "%s height", name)
	}

	// -x time writes only the time plots, under another prefix.
	stdout.Reset()
	require.NoError(t, run([]string{"-out", filepath.Join(root, "t"), "-x", "time", "-names", "a,b", a, b}, &stdout, io.Discard))
	assert.Equal(t, 2, strings.Count(stdout.String(), "\n"), "files written: %s", stdout.String())
	assert.NoFileExists(t, filepath.Join(root, "t-loss-step.png"))
	assert.FileExists(t, filepath.Join(root, "t-acc-time.png"))
}

func TestParseFlagsErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"m.jsonl"}, "missing -out"},
		{[]string{"-out", "c"}, "missing metrics files"},
		{[]string{"-out", "c", "-x", "epoch", "m.jsonl"}, `invalid -x "epoch"`},
		{[]string{"-out", "c", "-smooth", "1", "m.jsonl"}, "invalid -smooth 1"},
		{[]string{"-out", "c", "-names", "a,b", "m.jsonl"}, "2 names for 1 metrics files"},
	}
	for _, test := range tests {
		_, err := parseFlags(test.args, io.Discard)
		require.Error(t, err, "%v", test.args)
		assert.Contains(t, err.Error(), test.want)
	}

	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	require.NoError(t, os.WriteFile(bad, []byte("{\"type\":\"train\"}\nnot json\n"), 0o644))
	err := run([]string{"-out", filepath.Join(dir, "c"), bad}, io.Discard, io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "line 2")
}

func TestDefaultNames(t *testing.T) {
	assert.Equal(t, []string{"sam", "looksam"}, defaultNames([]string{"runs/sam/metrics.jsonl", "runs/looksam/metrics.jsonl"}))
	assert.Equal(t, []string{"a/x/metrics.jsonl", "b/x/metrics.jsonl"}, defaultNames([]string{"a/x/metrics.jsonl", "b/x/metrics.jsonl"}))
	assert.Equal(t, []string{"run1"}, defaultNames([]string{"run1.jsonl"}))
}
