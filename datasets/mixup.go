package datasets

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Mixup mixes the examples of a batch in pairs, as in mixup (Zhang et al. 2018,
// arXiv:1710.09412): each example i is blended with example perm(i) of the same batch,
//
//	x_i' = lambda x_i + (1 - lambda) x_perm(i)
//	y_i' = lambda y_i + (1 - lambda) y_perm(i)
//
// with one lambda ~ Beta(Alpha, Alpha) and one permutation perm per batch, both drawn from a
// random source seeded from (Seed, step). The target y_i is the one-hot vector of label i, or with
// label smoothing epsilon, (1 - epsilon) one-hot + epsilon / Classes.
//
// Mixing commutes with normalization (x -> (x - mean) / std is affine and the weights sum to 1),
// so images may be mixed before or after it.
type Mixup struct {
	// Alpha is the parameter of the Beta(Alpha, Alpha) distribution of lambda; it must be positive.
	// Small values keep lambda near 0 or 1; Alpha 1 draws it uniformly.
	Alpha float64
	// Classes is the number of classes, the width of a target row.
	Classes int
	// Smoothing is label smoothing epsilon, in [0, 1).
	Smoothing float64
	// Seed seeds the draws of lambda and the permutation together with the step.
	Seed uint64
}

// Validate returns an error naming the first invalid field.
func (m Mixup) Validate() error {
	switch {
	case !(m.Alpha > 0) || math.IsInf(m.Alpha, 0):
		return fmt.Errorf("invalid mixup alpha %g: it must be positive and finite", m.Alpha)
	case m.Classes < 1:
		return fmt.Errorf("invalid mixup class count %d: it must be at least 1", m.Classes)
	case !(m.Smoothing >= 0 && m.Smoothing < 1):
		return fmt.Errorf("invalid label smoothing %g for mixup: it must be in [0, 1)", m.Smoothing)
	}
	return nil
}

// Apply returns a copy of b whose images are mixed and whose Targets hold the mixed soft targets.
// b itself is not modified; the copy shares its Labels. The draws depend only on Seed and step.
func (m Mixup) Apply(b Batch, step int64) (Batch, error) {
	if err := m.Validate(); err != nil {
		return Batch{}, err
	}
	if b.Size < 1 || len(b.Labels) != b.Size || len(b.Images)%b.Size != 0 {
		return Batch{}, fmt.Errorf("mixing batch at step %d: %d labels and %d image values do not make %d examples",
			step, len(b.Labels), len(b.Images), b.Size)
	}
	for i, label := range b.Labels {
		if label < 0 || int(label) >= m.Classes {
			return Batch{}, fmt.Errorf("mixing batch at step %d: label %d of example %d is outside [0, %d)",
				step, label, i, m.Classes)
		}
	}

	rng := mixupRand(m.Seed, step)
	lambda := betaSample(rng, m.Alpha)
	perm := permutation(rng, b.Size)

	// Images.
	out := b
	size := len(b.Images) / b.Size
	out.Images = make([]float32, len(b.Images))
	a, c := float32(lambda), float32(1-lambda)
	for i, j := range perm {
		dst := out.Images[i*size : (i+1)*size]
		x, y := b.Images[i*size:(i+1)*size], b.Images[j*size:(j+1)*size]
		for k := range dst {
			dst[k] = a*x[k] + c*y[k]
		}
	}

	// Targets, computed in float64: each class gets epsilon / K, and the labels share the rest.
	k := m.Classes
	base := m.Smoothing / float64(k)
	out.Targets = make([]float32, b.Size*k)
	row := make([]float64, k)
	for i, j := range perm {
		for class := range row {
			row[class] = base
		}
		row[b.Labels[i]] += lambda * (1 - m.Smoothing)
		row[b.Labels[j]] += (1 - lambda) * (1 - m.Smoothing)
		for class, v := range row {
			out.Targets[i*k+class] = float32(v)
		}
	}
	return out, nil
}

// mixupRand returns the random source of the batch at step in a run with seed. The stream
// differs from those of the shuffle and of the example augmentation.
func mixupRand(seed uint64, step int64) *rand.PCG {
	// An arbitrary constant: the first 64 bits of the fractional part of sqrt(3).
	const mixupStream = 0xbb67ae8584caa73b
	return rand.NewPCG(mix64(seed^mixupStream), mix64(uint64(step)^mixupStream))
}

// permutation returns a uniform random permutation of [0, n) by a Fisher-Yates shuffle.
func permutation(rng *rand.PCG, n int) []int {
	perm := make([]int, n)
	for i := range perm {
		perm[i] = i
	}
	for i := n - 1; i > 0; i-- {
		j := uniformBelow(rng, uint64(i+1))
		perm[i], perm[j] = perm[j], perm[i]
	}
	return perm
}

// betaSample returns a draw from Beta(alpha, alpha) as X / (X + Y) with X, Y ~ Gamma(alpha, 1).
// It works with the logarithms of X and Y, because for small alphas the gamma draws themselves
// can underflow to 0.
func betaSample(rng *rand.PCG, alpha float64) float64 {
	logX, logY := logGammaSample(rng, alpha), logGammaSample(rng, alpha)
	return 1 / (1 + math.Exp(logY-logX))
}

// logGammaSample returns the logarithm of a draw from Gamma(shape, 1) by the method of Marsaglia
// and Tsang ("A Simple Method for Generating Gamma Variables", ACM TOMS 26(3), 2000). A shape
// below 1 uses Gamma(shape) = Gamma(shape + 1) * U^(1/shape), from the same paper.
func logGammaSample(rng *rand.PCG, shape float64) float64 {
	if shape < 1 {
		u := 1 - uniformFloat64(rng) // in (0, 1], so its logarithm is finite
		return logGammaSample(rng, shape+1) + math.Log(u)/shape
	}
	d := shape - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := normalSample(rng)
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := 1 - uniformFloat64(rng)
		if math.Log(u) < 0.5*x*x+d-d*v+d*math.Log(v) {
			return math.Log(d * v)
		}
	}
}

// normalSample returns a standard normal draw by the Box-Muller transform. It is written here,
// like uniformBelow, so that the draws do not change with the Go version.
func normalSample(rng *rand.PCG) float64 {
	u1 := 1 - uniformFloat64(rng) // in (0, 1]
	u2 := uniformFloat64(rng)
	return math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
}
