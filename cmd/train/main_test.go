package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writeCIFAR10 writes the six files of the CIFAR-10 binary version with n records each to
// dir/cifar-10-batches-bin: a label byte, then the R, G and B planes of 32x32 bytes.
func writeCIFAR10(t *testing.T, dir string, n int) {
	t.Helper()
	batches := filepath.Join(dir, "cifar-10-batches-bin")
	require.NoError(t, os.MkdirAll(batches, 0o755))
	names := []string{"test_batch.bin"}
	for i := 1; i <= 5; i++ {
		names = append(names, fmt.Sprintf("data_batch_%d.bin", i))
	}
	for _, name := range names {
		data := make([]byte, 0, n*3073)
		for i := range n {
			record := make([]byte, 3073)
			record[0] = byte(i % 10)
			for j := 1; j < len(record); j++ {
				record[j] = byte((i*31 + j) % 256)
			}
			data = append(data, record...)
		}
		require.NoError(t, os.WriteFile(filepath.Join(batches, name), data, 0o644))
	}
}

func TestTrainOnCIFAR10(t *testing.T) {
	dir := t.TempDir()
	writeCIFAR10(t, dir, 16)
	var stdout, stderr bytes.Buffer
	err := run([]string{"-dataset", "cifar10", "-data-dir", dir, "-model", "cifar10-tiny", "-backend", "go",
		"-batch", "8", "-steps", "3", "-warmup", "1", "-checkpoint-dir", "", "-metrics", "-"}, &stdout, &stderr)
	require.NoError(t, err, "stderr: %s", stderr.String())
	assert.Contains(t, stdout.String(), "data: cifar10, 80 training and 16 test images of 32x32x3")
	assert.Contains(t, stdout.String(), "test accuracy")
}

func TestRunRejectsBadFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-k", "-1", "-optimizer", "looksam"}, "k=-1"},
		{[]string{"-rho", "-0.5"}, "rho=-0.5"},
		{[]string{"-batch", "0"}, "invalid -batch 0"},
		{[]string{"-dataset", "imagenet"}, `invalid -dataset "imagenet"`},
		{[]string{"-dataset", "cifar10"}, "missing -data-dir for cifar10"},
		{[]string{"-model", "vit-huge"}, `unknown model preset "vit-huge"`},
		{[]string{"-optimizer", "lookSAM"}, `unknown rule "lookSAM"`},
		{[]string{"-devices", "-2"}, "invalid -devices -2"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	}
	for _, c := range cases {
		var stdout, stderr bytes.Buffer
		err := run(c.args, &stdout, &stderr)
		require.Error(t, err, "%v", c.args)
		assert.Contains(t, err.Error(), c.want, "%v", c.args)
		assert.Empty(t, stdout.String(), "%v: no work may start before the flags are checked", c.args)
	}
}

func TestModelMustMatchDataset(t *testing.T) {
	dir := t.TempDir()
	writeCIFAR10(t, dir, 8)
	var stdout, stderr bytes.Buffer
	err := run([]string{"-dataset", "cifar10", "-data-dir", dir, "-backend", "go", "-checkpoint-dir", ""}, &stdout, &stderr)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cifar10-* or cifar100-* preset")
}

func TestTrainOnCIFAR10WithAugmentation(t *testing.T) {
	dir := t.TempDir()
	writeCIFAR10(t, dir, 16)
	var stdout, stderr bytes.Buffer
	err := run([]string{"-dataset", "cifar10", "-data-dir", dir, "-model", "cifar10-tiny", "-backend", "go",
		"-batch", "8", "-steps", "2", "-checkpoint-dir", "", "-metrics", "-",
		"-crop-pad", "4", "-flip", "-randaugment", "2,9", "-mixup", "0.2"}, &stdout, &stderr)
	require.NoError(t, err, "stderr: %s", stderr.String())
	assert.Contains(t, stdout.String(), "test accuracy")
}
