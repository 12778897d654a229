package looksam

import (
	"fmt"
	"math"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:staticcheck
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// linear returns the problem loss = <c, w> with constant gradient c.
func linear(dtype dtypes.DType, w0, c []float64) problem {
	return problem{
		dtype: dtype, params: map[string][]float64{"weights": w0}, order: []string{"weights"},
		loss: func(w map[string]*Node) *Node {
			x := w["weights"]
			return ReduceAllSum(Mul(x, ConvertDType(Const(x.Graph(), c), x.DType())))
		},
	}
}

// quadratic returns the problem loss = scale * |w|^2, whose gradient is 2 scale w.
func quadratic(dtype dtypes.DType, w0 []float64, scale float64) problem {
	return problem{
		dtype: dtype, params: map[string][]float64{"weights": w0}, order: []string{"weights"},
		loss: func(w map[string]*Node) *Node {
			x := w["weights"]
			return MulScalar(ReduceAllSum(Square(x)), scale)
		},
	}
}

func TestReuseStepUsesGv(t *testing.T) {
	// loss = w1 w2 from w = (0, 1): step 0 is a SAM step with g = (1, 0), eps = (1, 0),
	// g_s = (1, 1) and g_v = (0, 1); step 1 is a reuse step with g = (0.9, -0.1), whose gradient
	// for AdamW is g + 0.7 |g| g_v = (0.9, -0.1 + 0.7 * 0.9055385) = (0.9, 0.533877).
	p := problem{
		dtype: dtypes.Float64, params: map[string][]float64{"weights": {0, 1}}, order: []string{"weights"},
		// w1 w2 = ((w1 + w2)^2 - w1^2 - w2^2) / 2.
		loss: func(w map[string]*Node) *Node {
			x := w["weights"]
			return MulScalar(Sub(Square(ReduceAllSum(x)), ReduceAllSum(Square(x))), 0.5)
		},
	}
	h := newHarness(t, Config{Rule: RuleLookSAM, Base: BaseAdamW, Rho: 1, Alpha: 0.7, K: 2}, p)

	d := h.run(0.1)
	assertClose(t, []float64{-0.1, 0.9}, h.weights("weights"), 1e-7, "weights after the SAM step")
	assertClose(t, []float64{0, 1}, h.value("/optimizer/g_v/model", "weights"), 1e-9, "g_v")
	assert.InDelta(t, 1.0, d["grad_norm"], 1e-7)
	assert.InDelta(t, math.Sqrt2, d["perturbed_grad_norm"], 1e-6)

	h.run(0.1)
	// AdamW's first moment after two steps: m1 = 0.9 m0 + 0.1 g', with m0 = 0.1 g_s = (0.1, 0.1).
	m := h.value("/optimizer/adam_m/model", "weights")
	handed := []float64{(m[0] - 0.9*0.1) / 0.1, (m[1] - 0.9*0.1) / 0.1}
	assertClose(t, []float64{0.9, 0.533877}, handed, 1e-6, "gradient handed to AdamW on the reuse step")
}

func TestSAMHandsBaseGs(t *testing.T) {
	// loss = 0.5 w^2 at w = 1, rho = 0.1: g = 1, eps = 0.1, g_s = 1.1; SGD with lr 1 moves w by -1.1.
	h := newHarness(t, Config{Rule: RuleSAM, Base: BaseSGD, Rho: 0.1}, quadratic(dtypes.Float64, []float64{1}, 0.5))
	d := h.run(1)
	assertClose(t, []float64{-0.1}, h.weights("weights"), 1e-12, "w after one SAM step")
	assert.InDelta(t, 1.0, d["grad_norm"], 1e-6, "|g|")
	assert.InDelta(t, 1.1, d["perturbed_grad_norm"], 1e-6, "|g_s|")
	assert.InDelta(t, 0.1, d["perturbation_norm"], 1e-6, "|eps|")
}

func TestSAMGradientAtPerturbedWeights(t *testing.T) {
	// loss = w^2 at w = 3, rho = 1: g = 6, eps = +1, g_s = 8; SGD with lr 0.1 gives 3 - 0.8.
	h := newHarness(t, Config{Rule: RuleSAM, Base: BaseSGD, Rho: 1}, quadratic(dtypes.Float64, []float64{3}, 1))
	d := h.run(0.1)
	assertClose(t, []float64{2.2}, h.weights("weights"), 1e-7, "w after one SAM step")
	assert.InDelta(t, 8.0, d["perturbed_grad_norm"], 1e-5)
	assert.InDelta(t, 0.8, d["update_norm"], 1e-6, "update is the base step alone, no trace of eps")
}

func TestRhoZeroEqualsBase(t *testing.T) {
	for _, base := range Bases {
		for _, rule := range []Rule{RuleSAM, RuleLayerSAM, RuleASAM, RuleLookSAM, RuleLookLayerSAM, RuleSAMK} {
			p := quadratic(dtypes.Float32, []float64{3, -1, 0.5}, 0.7)
			plain := newHarness(t, Config{Base: base, WeightDecay: 0.01, NoDecay: []string{}}, p)
			sam := newHarness(t, Config{Rule: rule, Base: base, Rho: 0, Alpha: 0.5, K: kFor(rule, 2), WeightDecay: 0.01, NoDecay: []string{}}, p)
			for range 3 {
				plain.run(0.1)
				sam.run(0.1)
			}
			assert.Equal(t, plain.weights("weights"), sam.weights("weights"), "rule %s over %s with rho = 0", rule, base)
		}
	}
}

// kFor returns k for the k-rules and 0 (the default of 1) for the others.
func kFor(rule Rule, k int) int {
	if ruleSpecs[rule].between == betweenNone {
		return 0
	}
	return k
}

func TestStepCountMovesOncePerStep(t *testing.T) {
	// loss = 0.5 w^2 at w = 1: the first AdamW update has size lr exactly (up to epsilon), which a
	// doubled bias-correction count would make about 0.0744 for lr = 0.1.
	h := newHarness(t, Config{Rule: RuleSAM, Base: BaseAdamW, Rho: 0.05}, quadratic(dtypes.Float64, []float64{1}, 0.5))
	h.run(0.1)
	assertClose(t, []float64{0.9}, h.weights("weights"), 1e-7, "first AdamW update")
	for range 4 {
		h.run(0.1)
	}
	assert.Equal(t, []float64{5}, h.value(StateScope, StepVariable), "step counter after 5 SAM steps")
}

func TestSAMKSchedule(t *testing.T) {
	opt, err := New(Config{Rule: RuleSAMK, K: 2, Rho: 0.1})
	require.NoError(t, err)
	var got []StepKind
	for step := range int64(6) {
		got = append(got, opt.Kind(step))
	}
	assert.Equal(t, []StepKind{KindSAM, KindPlain, KindSAM, KindPlain, KindSAM, KindPlain}, got)

	look, err := New(Config{Rule: RuleLookSAM, K: 3, Rho: 0.1})
	require.NoError(t, err)
	assert.Equal(t, []StepKind{KindSAM, KindReuse}, look.Kinds())
	assert.Equal(t, KindReuse, look.Kind(4))
	assert.Equal(t, KindSAM, look.Kind(6))
}

func TestLAMBMovesZeroTensor(t *testing.T) {
	// w = (0, 0), g = (1, -2), lr 0.01: the trust ratio is 1, and the Adam direction is the sign.
	h := newHarness(t, Config{Base: BaseLAMB}, linear(dtypes.Float64, []float64{0, 0}, []float64{1, -2}))
	h.run(0.01)
	assertClose(t, []float64{-0.01, 0.01}, h.weights("weights"), 1e-6, "LAMB from zero weights")

	zero := newHarness(t, Config{Base: BaseLAMB}, linear(dtypes.Float64, []float64{0, 0}, []float64{0, 0}))
	d := zero.run(0.01)
	assert.Equal(t, []float64{0, 0}, zero.weights("weights"), "zero gradient on zero weights")
	assert.False(t, math.IsNaN(d["update_norm"]), "update norm is finite")
}

func TestLAMBDecayBeforeTrustRatio(t *testing.T) {
	// Step 1, w = (3, 4), g = (1, 0), weight decay 0.1, lr 0.01: r = (1.3, 0.4), phi = 3.67607.
	h := newHarness(t, Config{Base: BaseLAMB, WeightDecay: 0.1, AdamEpsilon: 1e-6},
		linear(dtypes.Float64, []float64{3, 4}, []float64{1, 0}))
	h.run(0.01)
	assertClose(t, []float64{2.952211, 3.985296}, h.weights("weights"), 1e-6, "LAMB with decay before the trust ratio")
}

func TestClipByGlobalNormOnce(t *testing.T) {
	p := problem{
		dtype: dtypes.Float64, params: map[string][]float64{"a": {0, 0}, "b": {0, 0}}, order: []string{"a", "b"},
		loss: func(w map[string]*Node) *Node {
			a, b := w["a"], w["b"]
			return Add(ReduceAllSum(Mul(a, Const(a.Graph(), []float64{3, 0}))), ReduceAllSum(Mul(b, Const(b.Graph(), []float64{0, 4}))))
		},
	}
	for _, rule := range []Rule{RuleNone, RuleSAM} {
		h := newHarness(t, Config{Rule: rule, Base: BaseSGD, Rho: 0.1, ClipNorm: 1}, p)
		h.run(1)
		assertClose(t, []float64{-0.6, 0}, h.weights("a"), 1e-12, fmt.Sprintf("%s: first tensor", rule))
		assertClose(t, []float64{0, -0.8}, h.weights("b"), 1e-12, fmt.Sprintf("%s: second tensor", rule))
	}
}

func TestZeroGradientGivesFiniteStep(t *testing.T) {
	for _, dtype := range []dtypes.DType{dtypes.Float64, dtypes.Float32, dtypes.Float16, dtypes.BFloat16} {
		if !supportsDType(dtype) {
			t.Logf("skipping %s: the %s backend has no arithmetic for it", dtype, testBackend.Name())
			continue
		}
		for _, rule := range []Rule{RuleSAM, RuleLayerSAM, RuleASAM, RuleLookSAM, RuleLookLayerSAM} {
			for _, perTensor := range []bool{false, true} {
				name := fmt.Sprintf("%s/%s/perTensor=%v", dtype, rule, perTensor)
				h := newHarness(t, Config{Rule: rule, Base: BaseAdamW, Rho: 0.05, Alpha: 0.7, K: kFor(rule, 2), PerTensor: perTensor},
					linear(dtype, []float64{1, -2}, []float64{0, 0}))
				for range 3 {
					d := h.run(0.1)
					for _, key := range []string{"loss", "grad_norm", "perturbation_norm", "update_norm"} {
						if !math.IsNaN(d[key]) || key == "loss" || key == "grad_norm" || key == "update_norm" {
							assert.False(t, math.IsNaN(d[key]) || math.IsInf(d[key], 0), "%s: %s = %v", name, key, d[key])
						}
					}
				}
				assertClose(t, []float64{1, -2}, h.weights("weights"), 1e-12, name+": weights stay put")
			}
		}
	}
}

func TestLayerSAMZeroGradientTensor(t *testing.T) {
	// Tensor a has zero gradient, tensor b has gradient (3, 4): a's perturbation is 0 and b's is
	// rho (|w_b| / |g_b|) g_b / |g| = 0.5 (5 / 5) (3, 4) / 5 = (0.3, 0.4).
	p := problem{
		dtype: dtypes.Float64, params: map[string][]float64{"a": {1, 1}, "b": {3, 4}}, order: []string{"a", "b"},
		loss: func(w map[string]*Node) *Node {
			b := w["b"]
			return Add(MulScalar(ReduceAllSum(w["a"]), 0), ReduceAllSum(Mul(b, Const(b.Graph(), []float64{3, 4}))))
		},
	}
	h := newHarness(t, Config{Rule: RuleLayerSAM, Base: BaseSGD, Rho: 0.5}, p)
	d := h.run(0)
	assert.InDelta(t, 0.5, d["perturbation_norm"], 1e-9, "|eps| = |(0, 0, 0.3, 0.4)|")
	assertClose(t, []float64{1, 1}, h.weights("a"), 0, "zero-gradient tensor")
}

func TestParallelGsGivesZeroGv(t *testing.T) {
	// loss = 0.5 |w|^2 at w = (3, 4) with rho = 5: eps = w, so g_s = 2 g exactly, g_v = 0, and the
	// reuse gradient is g itself.
	for _, dtype := range []dtypes.DType{dtypes.Float64, dtypes.Float32, dtypes.BFloat16} {
		look := newHarness(t, Config{Rule: RuleLookSAM, Base: BaseSGD, Rho: 5, Alpha: 0.7, K: 2},
			quadratic(dtype, []float64{3, 4}, 0.5))
		samk := newHarness(t, Config{Rule: RuleSAMK, Base: BaseSGD, Rho: 5, K: 2},
			quadratic(dtype, []float64{3, 4}, 0.5))
		d := look.run(0.1)
		samk.run(0.1)
		assert.Equal(t, 0.0, d["g_v_norm"], "%s: |g_v|", dtype)
		look.run(0.1)
		samk.run(0.1)
		assert.Equal(t, samk.weights("weights"), look.weights("weights"), "%s: reuse step equals the plain step", dtype)
	}
}

func TestConfigValidation(t *testing.T) {
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{Rule: RuleSAM, Rho: -0.1}, "rho=-0.1"},
		{Config{Rule: RuleLookSAM, K: -1}, "k=-1"},
		{Config{Rule: RuleLookSAM, Alpha: -1}, "alpha=-1"},
		{Config{Rule: "lookSAM"}, `unknown rule "lookSAM"`},
		{Config{Base: "adam"}, `unknown base optimizer "adam"`},
		{Config{Rule: RuleSAM, K: 5}, "k=5"},
		{Config{Rule: RuleSAM, Rho: math.NaN()}, "rho=NaN"},
		{Config{WeightDecay: -1}, "weight decay=-1"},
		{Config{Base: BaseSGD, Momentum: 1}, "momentum=1"},
	}
	for _, c := range cases {
		_, err := New(c.cfg)
		require.Error(t, err, "%+v", c.cfg)
		assert.Contains(t, err.Error(), c.want)
	}
}

func TestLayerSAMRatioCap(t *testing.T) {
	// w = (6, 8) and g = (0.3, 0.4): |w| / |g| = 20, capped at 4, so eps = rho 4 g / |g| =
	// 0.1 * 4 * (0.6, 0.8) = (0.24, 0.32) with |eps| = 0.4; uncapped |eps| = 0.1 * 20 = 2.
	for _, c := range []struct {
		ratioMax, wantEps float64
	}{{0, 2}, {4, 0.4}, {50, 2}} {
		h := newHarness(t, Config{Rule: RuleLayerSAM, Base: BaseSGD, Rho: 0.1, LayerRatioMax: c.ratioMax},
			linear(dtypes.Float64, []float64{6, 8}, []float64{0.3, 0.4}))
		d := h.run(0)
		assert.InDelta(t, c.wantEps, d["perturbation_norm"], 1e-6, "LayerRatioMax %g", c.ratioMax)
	}
	_, err := New(Config{Rule: RuleLayerSAM, LayerRatioMax: -1})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "layer ratio max=-1")
}
