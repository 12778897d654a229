package main

import (
	"io"
	"testing"

	"github.com/looksam/vitsam/datasets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPresetLetsFlagsOverride(t *testing.T) {
	f, err := parseFlags([]string{"-preset", "table10-b16", "-lr", "0.01", "-batch", "64"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "b16", f.model, "model from the preset")
	assert.Equal(t, "looksam", f.optimizer, "rule from the preset")
	assert.Equal(t, "adamw", f.base, "base from the preset")
	assert.Equal(t, 0.3, f.weightDecay, "weight decay from the preset")
	assert.Equal(t, 300, f.epochs, "epochs from the preset")
	assert.Equal(t, 0.01, f.lr, "explicit -lr")
	assert.Equal(t, 64, f.batch, "explicit -batch")

	f, err = parseFlags([]string{"-preset", "table11-64k"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, 65536, f.batch)
	assert.Equal(t, "looklayersam", f.optimizer)
	assert.Equal(t, "lamb", f.base)
	assert.Equal(t, 2e-3, f.lr, "a value the preset leaves unset keeps the flag default")

	_, err = parseFlags([]string{"-preset", "table9"}, io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `unknown training preset "table9"`)
}

func TestAugmentFlagsErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-mixup", "-0.5"}, "invalid -mixup -0.5"},
		{[]string{"-randaugment", "2"}, "invalid -randaugment"},
		{[]string{"-randaugment", "2,31"}, "M must be a number in [0, 30]"},
		{[]string{"-randaugment", "0,9"}, "N must be a whole number"},
		{[]string{"-crop-pad", "-1"}, "invalid -crop-pad -1"},
		{[]string{"-crop-pad", "28"}, "invalid -crop-pad 28"},
	}
	for _, test := range tests {
		f, err := parseFlags(test.args, io.Discard)
		require.NoError(t, err, "%v", test.args)
		err = f.validate()
		require.Error(t, err, "%v", test.args)
		assert.Contains(t, err.Error(), test.want)
	}
}

func TestAugmentSourceChain(t *testing.T) {
	d := &datasets.Dataset{Name: "d", Height: 28, Width: 28, Channels: 1}
	none := augmentFlags{}
	assert.Nil(t, none.source(d))
	assert.Equal(t, "none", none.describe())

	crop := augmentFlags{cropPad: 4, flip: true}
	assert.Equal(t, &datasets.PadCropFlip{Dataset: d, Pad: 4, Flip: true}, crop.source(d))

	full := augmentFlags{cropPad: 2, randAugment: "2,9", mixup: 0.2}
	want := &datasets.RandAugment{Source: &datasets.PadCropFlip{Dataset: d, Pad: 2}, N: 2, Magnitude: 9}
	assert.Equal(t, want, full.source(d))
	assert.Equal(t, "random crop with padding 2, RandAugment 2,9, mixup alpha 0.2", full.describe())

	randOnly := augmentFlags{randAugment: "1,5"}
	assert.Equal(t, &datasets.RandAugment{Source: d, N: 1, Magnitude: 5}, randOnly.source(d))
}
