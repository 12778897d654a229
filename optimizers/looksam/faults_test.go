package looksam

import (
	"fmt"
	"math"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:staticcheck
	"github.com/stretchr/testify/assert"
)

// faultDTypes are the parameter dtypes of the fault tests. Float16 is skipped where the backend
// lacks it.
var faultDTypes = []dtypes.DType{dtypes.Float64, dtypes.Float32, dtypes.BFloat16, dtypes.Float16}

// forEachDType runs fn as a subtest per dtype of faultDTypes, skipping the ones that the test
// backend cannot compute in.
func forEachDType(t *testing.T, fn func(t *testing.T, dtype dtypes.DType)) {
	for _, dtype := range faultDTypes {
		t.Run(dtype.String(), func(t *testing.T) {
			if !supportsDType(dtype) {
				t.Skipf("the %s backend has no %s arithmetic", testBackend.Name(), dtype)
			}
			fn(t, dtype)
		})
	}
}

// computedDiagnostics are the diagnostics that each step kind computes, as the training loop checks
// them for NaN and Inf.
var computedDiagnostics = map[StepKind][]string{
	KindPlain: {"loss", "grad_norm", "update_norm", "param_norm"},
	KindReuse: {"loss", "grad_norm", "g_v_norm", "update_norm", "param_norm"},
	KindSAM:   {"loss", "grad_norm", "perturbed_grad_norm", "cos_theta", "perturbation_norm", "update_norm", "param_norm"},
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// linearPair returns loss = <ca, a> + <cb, b> over the tensors "a" and "b", whose gradient is
// (ca, cb) at every point. The constants may hold NaN or Inf.
func linearPair(dtype dtypes.DType, a, ca, b, cb []float64) problem {
	return problem{
		dtype: dtype, params: map[string][]float64{"a": a, "b": b}, order: []string{"a", "b"},
		loss: func(w map[string]*Node) *Node {
			term := func(x *Node, c []float64) *Node {
				return ReduceAllSum(Mul(x, ConvertDType(Const(x.Graph(), c), x.DType())))
			}
			return Add(term(w["a"], ca), term(w["b"], cb))
		},
	}
}

// quadraticPair returns loss = 0.5 (sa |a|^2 + sb |b|^2), whose gradient is (sa a, sb b).
func quadraticPair(dtype dtypes.DType, a []float64, sa float64, b []float64, sb float64) problem {
	return problem{
		dtype: dtype, params: map[string][]float64{"a": a, "b": b}, order: []string{"a", "b"},
		loss: func(w map[string]*Node) *Node {
			return Add(MulScalar(ReduceAllSum(Square(w["a"])), 0.5*sa), MulScalar(ReduceAllSum(Square(w["b"])), 0.5*sb))
		},
	}
}

func TestZeroGradientEveryRule(t *testing.T) {
	cases := []struct {
		name   string
		ca, cb []float64
	}{
		{"every tensor", []float64{0, 0}, []float64{0, 0, 0}},
		{"one tensor", []float64{0, 0}, []float64{1, -2, 0.5}},
	}
	forEachDType(t, func(t *testing.T, dtype dtypes.DType) {
		for _, c := range cases {
			for _, rule := range Rules {
				for _, base := range Bases {
					for _, perTensor := range []bool{false, true} {
						name := fmt.Sprintf("%s/%s/%s/perTensor=%v", c.name, rule, base, perTensor)
						cfg := Config{Rule: rule, Base: base, Rho: 0.05, Alpha: 0.7, K: kFor(rule, 2), PerTensor: perTensor, Momentum: 0.9}
						h := newHarness(t, cfg, linearPair(dtype, []float64{1, -2}, c.ca, []float64{0.5, 3, -1}, c.cb))
						for step := range 4 {
							kind := h.opt.Kind(h.step)
							d := h.run(0.1)
							for _, key := range computedDiagnostics[kind] {
								assert.True(t, finite(d[key]), "%s: step %d: %s = %v", name, step, key, d[key])
							}
							if c.name == "every tensor" {
								assert.Equal(t, 0.0, d["grad_norm"], "%s: step %d: |g|", name, step)
								assert.Equal(t, 0.0, d["update_norm"], "%s: step %d: update norm", name, step)
							}
							if kind == KindSAM && c.name == "every tensor" {
								assert.Equal(t, 0.0, d["perturbation_norm"], "%s: step %d: |eps|", name, step)
							}
							if !math.IsNaN(d["g_v_norm"]) {
								assert.Equal(t, 0.0, d["g_v_norm"], "%s: step %d: |g_v| of a linear loss", name, step)
							}
						}
						assert.Equal(t, []float64{1, -2}, h.weights("a"), "%s: the tensor with zero gradient stays put", name)
						if c.name == "every tensor" {
							assert.Equal(t, []float64{0.5, 3, -1}, h.weights("b"), "%s: weights stay put", name)
						}
					}
				}
			}
		}
	})
}

// dtypeTolerance is the relative tolerance of a value computed once in dtype.
func dtypeTolerance(dtype dtypes.DType) float64 {
	switch dtype {
	case dtypes.Float64:
		return 1e-9
	case dtypes.Float32:
		return 1e-5
	default:
		return 2e-2
	}
}

// diagnosticTolerance is the relative tolerance of a diagnostic, which is float32 whatever dtype.
func diagnosticTolerance(dtype dtypes.DType) float64 { return max(dtypeTolerance(dtype), 1e-6) }

func TestLayerSAMZeroWeights(t *testing.T) {
	// Tensor a is zero with gradient (1, 2), tensor b = (3, 4) has gradient (0.6, -0.8). eps_a = 0,
	// and |eps_b| = rho (|w_b| / |g_b|) |g_b| / |g| = rho |w_b| / |g| = 0.1 * 5 / sqrt(6), or
	// rho |w_b| / |g_b| = 0.5 per tensor. The loss is linear, so g_s = g.
	const rho = 0.1
	forEachDType(t, func(t *testing.T, dtype dtypes.DType) {
		for _, rule := range []Rule{RuleLayerSAM, RuleLookLayerSAM} {
			for _, base := range Bases {
				for _, perTensor := range []bool{false, true} {
					name := fmt.Sprintf("%s/%s/perTensor=%v", rule, base, perTensor)
					cfg := Config{Rule: rule, Base: base, Rho: rho, Alpha: 0.7, K: kFor(rule, 2), PerTensor: perTensor}
					h := newHarness(t, cfg, linearPair(dtype, []float64{0, 0}, []float64{1, 2}, []float64{3, 4}, []float64{0.6, -0.8}))
					d := h.run(0.01)
					want := rho * 5 / math.Sqrt(6)
					if perTensor {
						want = rho * 5 / 1
					}
					assert.InDelta(t, want, d["perturbation_norm"], diagnosticTolerance(dtype)*want, "%s: |eps| = |eps_b|", name)

					zero := newHarness(t, cfg, linearPair(dtype, []float64{0, 0}, []float64{1, 2}, []float64{0, 0, 0}, []float64{0.6, -0.8, 0}))
					d = zero.run(0.01)
					assert.Equal(t, 0.0, d["perturbation_norm"], "%s: |eps| with every weight zero", name)
					for _, key := range computedDiagnostics[KindSAM] {
						assert.True(t, finite(d[key]), "%s: %s = %v with every weight zero", name, key, d[key])
					}
				}
			}
		}
	})
}

func TestASAMZeroWeights(t *testing.T) {
	// With w = 0, T = eta everywhere and eps = rho eta^2 g / |eta g| = rho eta g / |g|: |eps| is
	// rho eta, or rho eta per tensor.
	const rho, eta = 0.5, 0.01
	forEachDType(t, func(t *testing.T, dtype dtypes.DType) {
		for _, perTensor := range []bool{false, true} {
			h := newHarness(t, Config{Rule: RuleASAM, Base: BaseSGD, Rho: rho, PerTensor: perTensor},
				linearPair(dtype, []float64{0, 0}, []float64{1, 2}, []float64{0, 0, 0}, []float64{3, 0, -4}))
			d := h.run(0.01)
			want := rho * eta
			if perTensor {
				want *= math.Sqrt2
			}
			assert.InDelta(t, want, d["perturbation_norm"], diagnosticTolerance(dtype)*want, "perTensor=%v: |eps|", perTensor)
		}
	})
}

func TestLAMBFromZeroWeightsEveryRule(t *testing.T) {
	// From w = 0 the trust ratio is 1, so LAMB's first step is lr m_hat / (sqrt(v_hat) + epsilon)
	// = lr g / (|g| + 1e-6) element-wise, on tensor a (trust ratio 1) as on the excluded "bias".
	// The loss is linear, so every rule hands LAMB the same gradient.
	const lr = 0.01
	step := func(g float64) float64 { return -float64(float32(lr)) * g / (math.Abs(g) + 1e-6) }
	forEachDType(t, func(t *testing.T, dtype dtypes.DType) {
		p := problem{
			dtype: dtype, params: map[string][]float64{"a": {0, 0, 0}, "bias": {0, 0}}, order: []string{"a", "bias"},
			loss: func(w map[string]*Node) *Node {
				a, bias := w["a"], w["bias"]
				return Add(ReduceAllSum(Mul(a, ConvertDType(Const(a.Graph(), []float64{1, -2, 0}), a.DType()))),
					ReduceAllSum(Mul(bias, ConvertDType(Const(a.Graph(), []float64{-3, 0.5}), a.DType()))))
			},
		}
		for _, rule := range Rules {
			for _, perTensor := range []bool{false, true} {
				name := fmt.Sprintf("%s/perTensor=%v", rule, perTensor)
				h := newHarness(t, Config{Rule: rule, Base: BaseLAMB, Rho: 0.1, Alpha: 0.7, K: kFor(rule, 2), PerTensor: perTensor}, p)
				d := h.run(lr)
				assertClose(t, []float64{step(1), step(-2), 0}, h.weights("a"), dtypeTolerance(dtype)*lr, name+": a")
				assertClose(t, []float64{step(-3), step(0.5)}, h.weights("bias"), dtypeTolerance(dtype)*lr, name+": bias")
				assert.True(t, finite(d["update_norm"]), "%s: update norm %v", name, d["update_norm"])
			}
		}
	})
}

func TestParallelGsEveryKind(t *testing.T) {
	// Each case has g_s parallel to g, over the whole vector or only tensor by tensor. Then g_v is
	// zero, up to rounding that ProjectionTolerance removes, and a reuse step hands the base
	// optimizer g itself: the run is bit-identical to one with alpha = 0.
	cases := []struct {
		name string
		// parallel reports whether g_s is parallel to g under the rule and norm grouping.
		parallel func(rule Rule, perTensor bool) bool
		problem  func(dtype dtypes.DType) problem
	}{
		{"linear loss", func(Rule, bool) bool { return true }, func(dtype dtypes.DType) problem {
			return linearPair(dtype, []float64{1, -2}, []float64{0.3, 0.4}, []float64{0.5, 3, -1}, []float64{-1, 2, 0.25})
		}},
		{"isotropic quadratic", func(Rule, bool) bool { return true }, func(dtype dtypes.DType) problem {
			return quadraticPair(dtype, []float64{1, -2}, 0.7, []float64{0.5, 3, -1}, 0.7)
		}},
		// eps_i = rho g_i / |g| scales tensor i's gradient by 1 + s_i rho / |g|, a factor that differs
		// between tensors. LayerSAM's eps_i = rho |w_i| g_i / (|g_i| |g|) scales both by 1 + rho / |g|.
		{"isotropic per tensor", func(rule Rule, perTensor bool) bool { return perTensor || rule == RuleLookLayerSAM },
			func(dtype dtypes.DType) problem {
				return quadraticPair(dtype, []float64{1, 0.5}, 1, []float64{0.5, -1}, 4)
			}},
	}
	forEachDType(t, func(t *testing.T, dtype dtypes.DType) {
		for _, c := range cases {
			for _, rule := range []Rule{RuleLookSAM, RuleLookLayerSAM} {
				for _, base := range Bases {
					for _, perTensor := range []bool{false, true} {
						name := fmt.Sprintf("%s/%s/%s/perTensor=%v", c.name, rule, base, perTensor)
						cfg := Config{Rule: rule, Base: base, Rho: 2, K: 3, PerTensor: perTensor, Momentum: 0.9}
						withoutReuse := newHarness(t, cfg, c.problem(dtype))
						cfg.Alpha = 0.7
						h := newHarness(t, cfg, c.problem(dtype))
						d := h.run(0.05)
						withoutReuse.run(0.05)
						if !c.parallel(rule, perTensor) {
							assert.Greater(t, d["g_v_norm"], 0.0, "%s: |g_v| where g_s is not parallel to g", name)
							continue
						}
						assert.Equal(t, 0.0, d["g_v_norm"], "%s: |g_v|", name)
						for _, param := range []string{"a", "b"} {
							gv := h.value(StateScope+"/g_v/model", param)
							assert.Equal(t, make([]float64, len(gv)), gv, "%s: stored g_v of %s", name, param)
						}
						for range 2 {
							h.run(0.05)
							withoutReuse.run(0.05)
						}
						assert.Equal(t, withoutReuse.snapshot([]string{"a", "b"}), h.snapshot([]string{"a", "b"}),
							"%s: reuse steps with g_v = 0 against alpha = 0", name)
					}
				}
			}
		}
	})
}

// nonFiniteCases are gradients with a NaN or an Inf element.
var nonFiniteCases = []struct {
	name  string
	value float64
	// gradNorm checks the grad_norm diagnostic.
	gradNorm func(float64) bool
}{
	{"NaN", math.NaN(), math.IsNaN},
	{"Inf", math.Inf(1), func(x float64) bool { return math.IsInf(x, 1) }},
}

// hasNonFinite reports whether any element of x is NaN or infinite.
func hasNonFinite(x []float64) bool {
	for _, v := range x {
		if !finite(v) {
			return true
		}
	}
	return false
}

func TestNonFiniteGradientPropagates(t *testing.T) {
	// A NaN or Inf in the gradient is not zeroed or skipped: grad_norm shows it, the update and
	// the weights take it, and the training loop, which stops on the first non-finite diagnostic,
	// stops on this step.
	forEachDType(t, func(t *testing.T, dtype dtypes.DType) {
		for _, c := range nonFiniteCases {
			for _, rule := range Rules {
				for _, base := range Bases {
					for _, clipNorm := range []float64{0, 1} {
						name := fmt.Sprintf("%s/%s/%s/clip=%g", c.name, rule, base, clipNorm)
						cfg := Config{Rule: rule, Base: base, Rho: 0.05, Alpha: 0.7, K: kFor(rule, 2), ClipNorm: clipNorm}
						h := newHarness(t, cfg, linearPair(dtype, []float64{1, -2}, []float64{1, c.value}, []float64{0.5, 3, -1}, []float64{1, 2, 3}))
						kind := h.opt.Kind(h.step)
						d := h.run(0.01)
						assert.True(t, c.gradNorm(d["grad_norm"]), "%s: grad_norm = %v", name, d["grad_norm"])
						assert.False(t, finite(d["update_norm"]), "%s: update_norm = %v", name, d["update_norm"])
						assert.True(t, hasNonFinite(h.weights("a")), "%s: weights of a = %v", name, h.weights("a"))
						if kind == KindSAM {
							assert.False(t, finite(d["perturbed_grad_norm"]), "%s: perturbed_grad_norm = %v", name, d["perturbed_grad_norm"])
							assert.False(t, finite(d["perturbation_norm"]), "%s: perturbation_norm = %v", name, d["perturbation_norm"])
						}
					}
				}
			}
		}
	})
}

func TestNonFiniteGradientOnReuseStep(t *testing.T) {
	// Step 0 is a finite SAM step. The reuse program, built at step 1, reads a gradient constant
	// that holds NaN or Inf.
	forEachDType(t, func(t *testing.T, dtype dtypes.DType) {
		for _, c := range nonFiniteCases {
			for _, rule := range []Rule{RuleLookSAM, RuleLookLayerSAM} {
				for _, base := range Bases {
					for _, perTensor := range []bool{false, true} {
						name := fmt.Sprintf("%s/%s/%s/perTensor=%v", c.name, rule, base, perTensor)
						poisoned := false
						p := problem{
							dtype: dtype, params: map[string][]float64{"a": {1, -2}, "b": {0.5, 3}}, order: []string{"a", "b"},
							loss: func(w map[string]*Node) *Node {
								a, b := w["a"], w["b"]
								last := 0.5
								if poisoned {
									last = c.value
								}
								ca := ConvertDType(Const(a.Graph(), []float64{1, last}), a.DType())
								return Add(ReduceAllSum(Mul(a, ca)), MulScalar(ReduceAllSum(Mul(Square(b), a)), 0.5))
							},
						}
						// rho = 2 keeps |g_v| / |g_s| above the bfloat16 projection tolerance of 2^-7.
						h := newHarness(t, Config{Rule: rule, Base: base, Rho: 2, Alpha: 0.7, K: 2, PerTensor: perTensor}, p)
						first := h.run(0.01)
						assert.Greater(t, first["g_v_norm"], 0.0, "%s: g_v stored by the SAM step", name)
						poisoned = true
						d := h.run(0.01)
						assert.True(t, c.gradNorm(d["grad_norm"]), "%s: grad_norm = %v", name, d["grad_norm"])
						assert.False(t, finite(d["update_norm"]), "%s: update_norm = %v", name, d["update_norm"])
						assert.True(t, hasNonFinite(h.weights("a")), "%s: weights of a = %v", name, h.weights("a"))
					}
				}
			}
		}
	})
}

func TestNonFinitePerturbedGradient(t *testing.T) {
	// loss = -sqrt(w_1) - sqrt(w_2) at w = (0.01, 1) has g = (-5, -0.5), finite, but rho = 5 moves
	// w + eps below zero, where the gradient is NaN. The SAM diagnostics and the stored g_v show it.
	forEachDType(t, func(t *testing.T, dtype dtypes.DType) {
		p := problem{
			dtype: dtype, params: map[string][]float64{"weights": {0.01, 1}}, order: []string{"weights"},
			loss: func(w map[string]*Node) *Node { return Neg(ReduceAllSum(Sqrt(w["weights"]))) },
		}
		for _, rule := range Rules[1:] {
			for _, base := range Bases {
				for _, perTensor := range []bool{false, true} {
					name := fmt.Sprintf("%s/%s/perTensor=%v", rule, base, perTensor)
					h := newHarness(t, Config{Rule: rule, Base: base, Rho: 5, Alpha: 0.7, K: kFor(rule, 2), PerTensor: perTensor}, p)
					d := h.run(0.01)
					assert.True(t, finite(d["loss"]), "%s: loss = %v", name, d["loss"])
					assert.True(t, finite(d["grad_norm"]), "%s: grad_norm = %v", name, d["grad_norm"])
					for _, key := range []string{"perturbed_grad_norm", "cos_theta", "update_norm"} {
						assert.True(t, math.IsNaN(d[key]), "%s: %s = %v", name, key, d[key])
					}
					assert.True(t, hasNonFinite(h.weights("weights")), "%s: weights = %v", name, h.weights("weights"))
					if rule == RuleLookSAM || rule == RuleLookLayerSAM {
						assert.True(t, math.IsNaN(d["g_v_norm"]), "%s: g_v_norm = %v", name, d["g_v_norm"])
						assert.True(t, hasNonFinite(h.value(StateScope+"/g_v/model", "weights")), "%s: stored g_v", name)
					}
				}
			}
		}
	})
}

func TestBFloat16ToleranceFloor(t *testing.T) {
	// For bfloat16 parameters g_v is zeroed when |g_v| <= 2^-7 |g_s| (one machine epsilon), the
	// size of the rounding error of a projection of bfloat16 gradients. With rho = 0.5 on the
	// hidden-layer classifier, |g_v| / |g_s| is above that on some SAM steps, and a stored g_v is
	// never below it.
	p := hiddenLayerClassifier(2)
	p.dtype = dtypes.BFloat16
	h := newHarness(t, Config{Rule: RuleLookSAM, Base: BaseAdamW, Rho: 0.5, Alpha: 0.1, K: 5}, p)
	kept := 0
	for step := range 40 {
		kind := h.opt.Kind(h.step)
		d := h.run(0.01)
		if kind != KindSAM || d["g_v_norm"] == 0 {
			continue
		}
		kept++
		assert.Greater(t, d["g_v_norm"]/d["perturbed_grad_norm"], math.Pow(2, -7), "step %d: |g_v| / |g_s|", step)
	}
	assert.Positive(t, kept, "no SAM step kept g_v in bfloat16")
}
