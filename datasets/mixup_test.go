package datasets

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// classValuedBatch returns a batch of n 3x3 images in which every pixel of an example equals its
// label, a class in [0, 10).
func classValuedBatch(n int, seed uint64) Batch {
	rng := rand.New(rand.NewPCG(seed, 5))
	b := Batch{Images: make([]float32, n*9), Labels: make([]int32, n), Size: n, Shape: [4]int{n, 3, 3, 1}}
	for i := range n {
		b.Labels[i] = int32(rng.IntN(10))
		for k := range 9 {
			b.Images[i*9+k] = float32(b.Labels[i])
		}
	}
	return b
}

func TestMixupPixelsMatchTargets(t *testing.T) {
	// With unsmoothed targets, an image mixed from classes a and b has pixels
	// lambda a + (1 - lambda) b = sum_k k y_k.
	const classes = 10
	b := classValuedBatch(16, 1)
	original := slices.Clone(b.Images)
	mixup := Mixup{Alpha: 0.4, Classes: classes, Seed: 3}
	for step := range int64(5) {
		mixed, err := mixup.Apply(b, step)
		require.NoError(t, err)
		require.Len(t, mixed.Targets, b.Size*classes)
		for i := range b.Size {
			row := mixed.Targets[i*classes : (i+1)*classes]
			var sum, expectation float64
			for k, y := range row {
				assert.GreaterOrEqual(t, y, float32(0), "step %d, example %d, class %d", step, i, k)
				sum += float64(y)
				expectation += float64(k) * float64(y)
			}
			assert.InDelta(t, 1, sum, 1e-6, "step %d: target %d sums to %g", step, i, sum)
			for k := range 9 {
				assert.InDelta(t, expectation, mixed.Images[i*9+k], 1e-5, "step %d, example %d, pixel %d", step, i, k)
			}
		}
	}
	assert.Equal(t, original, b.Images, "Apply modified the input batch")
	assert.Nil(t, b.Targets, "Apply set the input batch's targets")
}

func TestMixupSmoothedTargets(t *testing.T) {
	// Every example is class 3, so mixing leaves the smoothed one-hot target: 0.9 + 0.1/10 at
	// class 3 and 0.1/10 elsewhere.
	b := classValuedBatch(8, 2)
	for i := range b.Labels {
		b.Labels[i] = 3
	}
	mixed, err := Mixup{Alpha: 1, Classes: 10, Smoothing: 0.1, Seed: 1}.Apply(b, 0)
	require.NoError(t, err)
	for i := range b.Size {
		for k := range 10 {
			want := 0.01
			if k == 3 {
				want = 0.91
			}
			assert.InDelta(t, want, mixed.Targets[i*10+k], 1e-6, "example %d, class %d", i, k)
		}
	}
}

func TestMixupDependsOnSeedAndStep(t *testing.T) {
	b := classValuedBatch(16, 3)
	mixup := Mixup{Alpha: 1, Classes: 10, Seed: 9}
	first, err := mixup.Apply(b, 4)
	require.NoError(t, err)
	again, err := mixup.Apply(b, 4)
	require.NoError(t, err)
	assert.Equal(t, first, again, "the same seed and step")

	next, err := mixup.Apply(b, 5)
	require.NoError(t, err)
	assert.NotEqual(t, first.Targets, next.Targets, "steps 4 and 5")
	mixup.Seed++
	reseeded, err := mixup.Apply(b, 4)
	require.NoError(t, err)
	assert.NotEqual(t, first.Targets, reseeded.Targets, "seeds 9 and 10")
}

func TestBetaSampleMoments(t *testing.T) {
	// Beta(a, a) has mean 1/2 and variance 1 / (4 (2a + 1)).
	const draws = 20000
	for _, alpha := range []float64{0.05, 0.2, 1, 4} {
		rng := rand.NewPCG(uint64(alpha*100), 7)
		var sum, sumSquares float64
		for range draws {
			x := betaSample(rng, alpha)
			require.True(t, x >= 0 && x <= 1, "alpha %g: draw %g outside [0, 1]", alpha, x)
			sum += x
			sumSquares += x * x
		}
		mean := sum / draws
		variance := sumSquares/draws - mean*mean
		wantVariance := 1 / (4 * (2*alpha + 1))
		assert.InDelta(t, 0.5, mean, 0.01, "alpha %g: mean", alpha)
		assert.InEpsilon(t, wantVariance, variance, 0.05, "alpha %g: variance", alpha)
	}
}

func TestPermutationIsUniform(t *testing.T) {
	// Each of the 6 permutations of 3 elements comes up about 1/6 of the time.
	counts := map[[3]int]int{}
	rng := rand.NewPCG(1, 1)
	const draws = 6000
	for range draws {
		p := permutation(rng, 3)
		counts[[3]int(p)]++
	}
	require.Len(t, counts, 6)
	for p, n := range counts {
		assert.InDelta(t, draws/6, n, 150, "permutation %v", p)
	}
}

func TestMixupRejectsBadValues(t *testing.T) {
	b := classValuedBatch(4, 4)
	cases := []struct {
		mixup Mixup
		batch Batch
		want  string
	}{
		{Mixup{Alpha: 0, Classes: 10}, b, "alpha 0"},
		{Mixup{Alpha: -1, Classes: 10}, b, "alpha -1"},
		{Mixup{Alpha: 1, Classes: 0}, b, "class count 0"},
		{Mixup{Alpha: 1, Classes: 10, Smoothing: 1}, b, "smoothing 1"},
		{Mixup{Alpha: 1, Classes: 2}, b, "outside [0, 2)"},
		{Mixup{Alpha: 1, Classes: 10}, Batch{Size: 2, Labels: []int32{1}}, "do not make 2 examples"},
	}
	for _, c := range cases {
		_, err := c.mixup.Apply(c.batch, 0)
		require.Error(t, err, "%+v", c.mixup)
		assert.Contains(t, err.Error(), c.want)
	}
}
