package datasets

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// randomImage returns an h x w x c image of uniform values in [0, 1).
func randomImage(seed uint64, h, w, c int) floatImage {
	source := rand.New(rand.NewPCG(seed, 3))
	img := floatImage{pix: make([]float32, h*w*c), height: h, width: w, channels: c}
	for i := range img.pix {
		img.pix[i] = source.Float32()
	}
	return img
}

// applyOp runs the named operation on a copy of img with the given parameter.
func applyOp(name string, img floatImage, param float64, fill float32) floatImage {
	out := img
	out.pix = slices.Clone(img.pix)
	randAugmentOpNamed(name).apply(out, param, fill, make([]float32, len(out.pix)))
	return out
}

func TestRandAugmentRotateSigns(t *testing.T) {
	rotate := randAugmentOpNamed("rotate")
	rng := rand.NewPCG(4, 2)
	const draws = 1000
	positive := 0
	for range draws {
		degrees := rotate.draw(9, rng)
		require.Contains(t, []float64{27, -27}, degrees, "rotation at M=9")
		if degrees > 0 {
			positive++
		}
	}
	assert.GreaterOrEqual(t, positive, 400, "got %d of %d rotations counter-clockwise, want 40-60%%", positive, draws)
	assert.LessOrEqual(t, positive, 600, "got %d of %d rotations counter-clockwise, want 40-60%%", positive, draws)
}

func TestRotateQuarterTurn(t *testing.T) {
	// A counter-clockwise quarter turn moves input (row c, column W-1-r) to output (r, c).
	img := floatImage{pix: []float32{
		0.1, 0.2, 0.3,
		0.4, 0.5, 0.6,
		0.7, 0.8, 0.9,
	}, height: 3, width: 3, channels: 1}
	want := []float32{
		0.3, 0.6, 0.9,
		0.2, 0.5, 0.8,
		0.1, 0.4, 0.7,
	}
	got := applyOp("rotate", img, 90, 0)
	assert.InDeltaSlice(t, want, got.pix, 1e-6, "rotate by +90 degrees")
}

func TestTranslateFractionOfSide(t *testing.T) {
	// At M = 50/9 the level is 0.45 * (50/9) / 10 = 0.25: 8 of 32 rows, 12 of 48 columns.
	const h, w = 32, 48
	level := randAugmentOpNamed("translate-y").level(50.0 / 9)
	require.InDelta(t, 0.25, level, 1e-12)
	img := randomImage(1, h, w, 1)
	const fill = 0.5

	down := applyOp("translate-y", img, level, fill)
	for row := range h {
		for col := range w {
			want := float32(fill)
			if row >= 8 {
				want = img.pix[(row-8)*w+col]
			}
			require.InDelta(t, want, down.pix[row*w+col], 1e-5, "translate-y: pixel (%d, %d)", row, col)
		}
	}

	right := applyOp("translate-x", img, level, fill)
	for row := range h {
		for col := range w {
			want := float32(fill)
			if col >= 12 {
				want = img.pix[row*w+col-12]
			}
			require.InDelta(t, want, right.pix[row*w+col], 1e-5, "translate-x: pixel (%d, %d)", row, col)
		}
	}
}

func TestPosterizeStrongerWithMagnitude(t *testing.T) {
	// A ramp through all 256 levels: the number of distinct values is 2^bits.
	img := floatImage{pix: make([]float32, 256), height: 16, width: 16, channels: 1}
	for i := range img.pix {
		img.pix[i] = float32(i) / 255
	}
	cases := []struct {
		magnitude float64
		levels    int
	}{{0, 256}, {2.5, 128}, {5, 64}, {7.5, 32}, {10, 16}, {15, 4}, {20, 2}, {30, 2}}
	previousError := -1.0
	for _, c := range cases {
		posterize := randAugmentOpNamed("posterize")
		out := applyOp("posterize", img, posterize.level(c.magnitude), 0)
		distinct := map[float32]bool{}
		var meanError float64
		for i, v := range out.pix {
			distinct[v] = true
			meanError += math.Abs(float64(v-img.pix[i])) / float64(len(out.pix))
		}
		assert.Len(t, distinct, c.levels, "distinct values at M=%g", c.magnitude)
		assert.GreaterOrEqual(t, meanError, previousError, "mean change at M=%g", c.magnitude)
		previousError = meanError
	}
	assert.Greater(t, previousError, 0.1, "1 bit changes the ramp a lot")
}

func TestRandAugmentMagnitudeZeroKeepsImage(t *testing.T) {
	img := randomImage(2, 9, 7, 3)
	for _, op := range randAugmentOps {
		if op.level == nil {
			continue // identity, auto-contrast and equalize have no magnitude
		}
		signs := []float64{1}
		if op.signed {
			signs = append(signs, -1)
		}
		for _, sign := range signs {
			out := applyOp(op.name, img, sign*op.level(0), 0.5)
			// Posterize at 8 bits rounds to the nearest of 256 levels.
			assert.InDeltaSlice(t, img.pix, out.pix, 0.5/255+1e-6, "%s at M=0", op.name)
		}
	}
}

func TestRandAugmentSkipsColorOnGreyscale(t *testing.T) {
	names := func(ops []randAugmentOp) []string {
		var out []string
		for _, op := range ops {
			out = append(out, op.name)
		}
		return out
	}
	assert.Len(t, randAugmentOpsFor(3), 14)
	assert.Contains(t, names(randAugmentOpsFor(3)), "color")
	assert.Len(t, randAugmentOpsFor(1), 13)
	assert.NotContains(t, names(randAugmentOpsFor(1)), "color")
}

func TestAutoContrastAndEqualize(t *testing.T) {
	img := floatImage{pix: []float32{0.2, 0.4, 0.4, 0.6}, height: 2, width: 2, channels: 1}
	assert.InDeltaSlice(t, []float32{0, 0.5, 0.5, 1}, applyOp("auto-contrast", img, 0, 0).pix, 1e-6)
	// Counts 1, 2, 1: cdf 1, 3, 4 and cdf_min 1 map to 0, 2/3, 1.
	assert.InDeltaSlice(t, []float32{0, 2.0 / 3, 2.0 / 3, 1}, applyOp("equalize", img, 0, 0).pix, 1e-6)

	flat := floatImage{pix: []float32{0.3, 0.3, 0.3, 0.3}, height: 2, width: 2, channels: 1}
	assert.Equal(t, flat.pix, applyOp("auto-contrast", flat, 0, 0).pix, "a constant image stays")
	assert.Equal(t, flat.pix, applyOp("equalize", flat, 0, 0).pix, "a constant image stays")
}

func TestSolarizeAndEnhance(t *testing.T) {
	img := floatImage{pix: []float32{0.1, 0.5, 0.9, 1}, height: 2, width: 2, channels: 1}
	// M = 4: values above 0.6 are inverted.
	assert.InDeltaSlice(t, []float32{0.1, 0.5, 0.1, 0}, applyOp("solarize", img, 0.4, 0).pix, 1e-6)
	// Brightness factor 1.5 scales and clips.
	assert.InDeltaSlice(t, []float32{0.15, 0.75, 1, 1}, applyOp("brightness", img, 0.5, 0).pix, 1e-6)
	// Contrast factor 0 leaves the mean, (0.1 + 0.5 + 0.9 + 1) / 4 = 0.625, everywhere.
	assert.InDeltaSlice(t, []float32{0.625, 0.625, 0.625, 0.625}, applyOp("contrast", img, -1, 0).pix, 1e-6)
}

func TestRandAugmentUndoesNormalization(t *testing.T) {
	// Augmenting the normalized dataset gives the normalized augmentation of the raw dataset.
	raw := randomDataset(6, 8, 8, 3)
	normalized := randomDataset(6, 8, 8, 3)
	mean, std := []float32{0.4, 0.5, 0.6}, []float32{0.2, 0.25, 0.3}
	require.NoError(t, normalized.NormalizeChannels(mean, std))

	size := raw.ExampleSize()
	for i := range raw.Len() {
		fromRaw := make([]float32, size)
		fromNormalized := make([]float32, size)
		var rng rand.PCG
		seedExampleRand(&rng, 7, 0, i)
		_, err := (&RandAugment{Source: raw, N: 3, Magnitude: 9}).Example(i, &rng, fromRaw)
		require.NoError(t, err)
		seedExampleRand(&rng, 7, 0, i)
		_, err = (&RandAugment{Source: normalized, N: 3, Magnitude: 9}).Example(i, &rng, fromNormalized)
		require.NoError(t, err)

		normalizeChannels(fromRaw, mean, std)
		assert.InDeltaSlice(t, fromRaw, fromNormalized, 1e-4, "example %d", i)
	}
}

func TestRandAugmentSameBatchesForAnyWorkers(t *testing.T) {
	augmented := &RandAugment{
		Source: &PadCropFlip{Dataset: randomDataset(21, 8, 8, 1), Pad: 2}, N: 2, Magnitude: 9,
	}
	options := IteratorOptions{BatchSize: 5, Shuffle: true, Seed: 3, Epochs: 2}
	oneWorker := collectPipeline(t, augmented, PipelineOptions{IteratorOptions: options, Workers: 1})
	threeWorkers := collectPipeline(t, augmented, PipelineOptions{IteratorOptions: options, Workers: 3})
	require.NotEmpty(t, oneWorker)
	assert.Equal(t, oneWorker, threeWorkers, "batches with 1 and with 3 workers")

	plain := collectPipeline(t, augmented.Source, PipelineOptions{IteratorOptions: options, Workers: 1})
	assert.NotEqual(t, plain[0].Images, oneWorker[0].Images, "RandAugment changed nothing")
}

func TestRandAugmentRejectsBadValues(t *testing.T) {
	d := randomDataset(2, 4, 4, 1)
	cases := []struct {
		augment RandAugment
		want    string
	}{
		{RandAugment{Source: d, N: -1}, "N=-1"},
		{RandAugment{Source: d, N: 2, Magnitude: 31}, "M=31"},
		{RandAugment{Source: d, N: 2, Magnitude: math.NaN()}, "M=NaN"},
		{RandAugment{Source: d, N: 2, Fill: 2}, "fill 2"},
		{RandAugment{N: 2}, "Source is nil"},
	}
	for _, c := range cases {
		_, err := c.augment.Example(0, rand.NewPCG(1, 1), make([]float32, 16))
		require.Error(t, err, "%+v", c.augment)
		assert.Contains(t, err.Error(), c.want)
	}
}

func TestParseRandAugment(t *testing.T) {
	n, m, err := ParseRandAugment("2,9")
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.Equal(t, 9.0, m)

	n, m, err = ParseRandAugment("")
	require.NoError(t, err)
	assert.Zero(t, n, "empty spec: no operations")
	assert.Zero(t, m, "empty spec: no magnitude")

	for _, bad := range []string{"2", "0,9", "2,31", "x,9", "2,x", "2x,9", "2,-1"} {
		_, _, err := ParseRandAugment(bad)
		assert.Error(t, err, "spec %q", bad)
	}
}
