package looksam

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:staticcheck
	"github.com/stretchr/testify/assert"
)

// snapshot returns the weights and the base optimizer's buffers of every parameter, and the step
// counter, keyed by "kind:name". Buffers that do not exist are left out.
func (h *harness) snapshot(names []string) map[string][]float64 {
	h.t.Helper()
	out := map[string][]float64{}
	for _, name := range names {
		out["weights:"+name] = h.weights(name)
		for _, kind := range []string{"adam_m", "adam_v", "sgd_momentum"} {
			scope := StateScope + "/" + kind + "/model"
			if h.ctx.GetVariableByScopeAndName(scope, name) != nil {
				out[kind+":"+name] = h.value(scope, name)
			}
		}
	}
	out["step"] = h.value(StateScope, StepVariable)
	return out
}

// reductionVariants returns the base-optimizer settings under which each reduction must hold.
func reductionVariants(base BaseName) []Config {
	var out []Config
	for _, perTensor := range []bool{false, true} {
		cfg := Config{Base: base, PerTensor: perTensor, WeightDecay: 0.05, NoDecay: []string{"bias"}}
		if base == BaseSGD {
			plain, nesterov := cfg, cfg
			nesterov.Momentum, nesterov.Nesterov, nesterov.ClipNorm = 0.9, true, 0.5
			out = append(out, plain, nesterov)
			continue
		}
		clipped := cfg
		clipped.ClipNorm = 0.5
		out = append(out, cfg, clipped)
	}
	return out
}

// variantName returns a short name for a reduction variant.
func variantName(dtype dtypes.DType, cfg Config) string {
	return fmt.Sprintf("%s/%s/perTensor=%v/momentum=%g/nesterov=%v/clip=%g", dtype, cfg.Base, cfg.PerTensor, cfg.Momentum,
		cfg.Nesterov, cfg.ClipNorm)
}

// reductionDTypes are the parameter dtypes for which the exact reductions are checked.
var reductionDTypes = []dtypes.DType{dtypes.Float64, dtypes.Float32, dtypes.BFloat16}

// assertSameRun runs both harnesses for steps steps with the same learning rates and checks after
// each step that the weights, the base optimizer's buffers and the step counter are bit-identical.
func assertSameRun(t *testing.T, want, got *harness, names []string, steps int, msg string) {
	t.Helper()
	for step := range steps {
		lr := 0.05 * (1 - 0.1*float64(step))
		want.run(lr)
		got.run(lr)
		assert.Equal(t, want.snapshot(names), got.snapshot(names), "%s: after step %d", msg, step)
	}
}

func TestRhoZeroIsBaseBitForBit(t *testing.T) {
	mixed := newMixedProblem(3)
	names := []string{"a", "bias", "c"}
	for _, dtype := range reductionDTypes {
		for _, base := range Bases {
			for _, variant := range reductionVariants(base) {
				for _, rule := range Rules[1:] {
					name := fmt.Sprintf("%s/%s", variantName(dtype, variant), rule)
					sam := variant
					sam.Rule, sam.Rho, sam.Alpha, sam.K = rule, 0, 0.5, kFor(rule, 2)
					plain := newHarness(t, variant, mixed.problem(dtype))
					h := newHarness(t, sam, mixed.problem(dtype))
					assertSameRun(t, plain, h, names, 5, name)
					if rule == RuleLookSAM || rule == RuleLookLayerSAM {
						for _, param := range names {
							gv := h.value(StateScope+"/g_v/model", param)
							assert.Equal(t, make([]float64, len(gv)), gv, "%s: g_v of %s with rho = 0", name, param)
						}
					}
				}
			}
		}
	}
}

func TestLookSAMKOneIsSAM(t *testing.T) {
	mixed := newMixedProblem(4)
	names := []string{"a", "bias", "c"}
	pairs := []struct{ look, every Rule }{{RuleLookSAM, RuleSAM}, {RuleLookLayerSAM, RuleLayerSAM}}
	for _, dtype := range reductionDTypes {
		for _, base := range Bases {
			for _, variant := range reductionVariants(base) {
				for _, pair := range pairs {
					name := fmt.Sprintf("%s/%s", variantName(dtype, variant), pair.look)
					look, every := variant, variant
					look.Rule, look.Rho, look.Alpha, look.K = pair.look, 0.1, 0.5, 1
					every.Rule, every.Rho = pair.every, 0.1
					assertSameRun(t, newHarness(t, every, mixed.problem(dtype)), newHarness(t, look, mixed.problem(dtype)),
						names, 4, name)
				}
			}
		}
	}
}

func TestLookSAMAlphaZeroIsSAMK(t *testing.T) {
	mixed := newMixedProblem(5)
	names := []string{"a", "bias", "c"}
	for _, dtype := range reductionDTypes {
		for _, base := range Bases {
			for _, variant := range reductionVariants(base) {
				look, samK := variant, variant
				// rho = 1 makes |g_v| / |g_s| larger than the bfloat16 projection tolerance of 2^-7.
				look.Rule, look.Rho, look.Alpha, look.K = RuleLookSAM, 1, 0, 3
				samK.Rule, samK.Rho, samK.K = RuleSAMK, 1, 3
				h := newHarness(t, look, mixed.problem(dtype))
				assertSameRun(t, newHarness(t, samK, mixed.problem(dtype)), h, names, 7, variantName(dtype, variant))
				assert.Greater(t, h.run(0.01)["g_v_norm"], 0.0, "%s: g_v is stored but not used", variantName(dtype, variant))
			}
		}
	}
}

// householderProblem returns loss = sum_i 0.5 w_i^T H_i w_i / ratio over tensors "a" and "b", with
// H_i = I - 2 u_i u_i^T / |u_i|^2 a reflection. H_i is symmetric and orthogonal, so g_i = H_i w_i /
// ratio has |w_i| / |g_i| = ratio at every point, while g_i is not parallel to w_i and g_s not
// parallel to g.
func householderProblem(dtype dtypes.DType, ratio float64, seed uint64) problem {
	rng := rand.New(rand.NewPCG(seed, 11))
	names, sizes := []string{"a", "b"}, []int{3, 4}
	params, reflections := map[string][]float64{}, map[string][][]float64{}
	for k, name := range names {
		n := sizes[k]
		u, w := make([]float64, n), make([]float64, n)
		var uu float64
		for i := range u {
			u[i], w[i] = rng.NormFloat64(), float64(float32(rng.NormFloat64()))
			uu += u[i] * u[i]
		}
		h := make([][]float64, n)
		for i := range h {
			h[i] = make([]float64, n)
			for j := range h[i] {
				h[i][j] = -2 * u[i] * u[j] / uu
				if i == j {
					h[i][j]++
				}
			}
		}
		params[name], reflections[name] = w, h
	}
	return problem{
		dtype: dtype, params: params, order: names,
		loss: func(w map[string]*Node) *Node {
			var total *Node
			for _, name := range names {
				x := w[name]
				h := ConvertDType(Const(x.Graph(), reflections[name]), x.DType())
				term := MulScalar(ReduceAllSum(Mul(x, Dot(h, x))), 0.5/ratio)
				if total == nil {
					total = term
				} else {
					total = Add(total, term)
				}
			}
			return total
		},
	}
}

func TestLayerSAMEqualRatiosIsScaledSAM(t *testing.T) {
	// With |w_i| / |g_i| = 2 for every tensor at every point, LayerSAM's eps_i =
	// rho (|w_i| / |g_i|) g_i / |g| is SAM's eps with radius 2 rho. The ratio is computed in a
	// different order than 2 rho, so the runs agree to rounding, not bit for bit.
	const ratio, rho = 2.0, 0.05
	tolerances := map[dtypes.DType]float64{dtypes.Float64: 1e-10, dtypes.Float32: 1e-5}
	pairs := []struct{ layer, global Rule }{{RuleLayerSAM, RuleSAM}, {RuleLookLayerSAM, RuleLookSAM}}
	for _, dtype := range []dtypes.DType{dtypes.Float64, dtypes.Float32} {
		for _, base := range Bases {
			for _, variant := range reductionVariants(base) {
				for _, pair := range pairs {
					name := fmt.Sprintf("%s/%s", variantName(dtype, variant), pair.layer)
					layer, global := variant, variant
					layer.Rule, layer.Rho, layer.Alpha, layer.K = pair.layer, rho, 0.5, kFor(pair.layer, 2)
					global.Rule, global.Rho, global.Alpha, global.K = pair.global, rho*ratio, 0.5, kFor(pair.global, 2)
					want := newHarness(t, global, householderProblem(dtype, ratio, 9))
					got := newHarness(t, layer, householderProblem(dtype, ratio, 9))
					for step := range 6 {
						lr := 0.05 * (1 - 0.1*float64(step))
						wantDiag, gotDiag := want.run(lr), got.run(lr)
						at := fmt.Sprintf("%s: step %d", name, step)
						if step == 0 {
							// Each tensor's eps has norm 2 rho per tensor, and the whole eps has it otherwise.
							wantNorm := rho * ratio
							if variant.PerTensor {
								wantNorm *= math.Sqrt2
							}
							assert.InDelta(t, wantNorm, gotDiag["perturbation_norm"], 1e-6*rho, "%s: |eps|", at)
						}
						for key, want := range want.snapshot([]string{"a", "b"}) {
							assertTensorClose(t, want, got.snapshot([]string{"a", "b"})[key], tolerances[dtype], at+": "+key)
						}
						assert.InDelta(t, wantDiag["g_v_norm"], gotDiag["g_v_norm"], 1e-5, "%s: |g_v|", at)
					}
				}
			}
		}
	}
}

// oneTensorProblem returns loss = lse(M w) + 0.5 w^T D w over one tensor "weights" of 4 elements.
func oneTensorProblem(dtype dtypes.DType) problem {
	m := [][]float64{{1, -0.5, 0.25, 2}, {0.3, 1.5, -1, 0}, {-2, 0.5, 0.5, 1}}
	d := []float64{0.5, 1, 2, 4}
	return problem{
		dtype: dtype, params: map[string][]float64{"weights": {0.5, -1, 1.5, 0.25}}, order: []string{"weights"},
		loss: func(w map[string]*Node) *Node {
			x := w["weights"]
			constant := func(value any) *Node { return ConvertDType(Const(x.Graph(), value), x.DType()) }
			logSumExp := Log(ReduceAllSum(Exp(Dot(constant(m), x))))
			return Add(logSumExp, MulScalar(ReduceAllSum(Mul(constant(d), Square(x))), 0.5))
		},
	}
}

func TestPerTensorOneTensorIsWholeVector(t *testing.T) {
	// With one tensor, per-tensor norms are the global norms, so PerTensor changes nothing.
	for _, dtype := range reductionDTypes {
		for _, base := range Bases {
			for _, rule := range Rules[1:] {
				name := fmt.Sprintf("%s/%s/%s", dtype, base, rule)
				whole := Config{Rule: rule, Base: base, Rho: 0.1, Alpha: 0.5, K: kFor(rule, 2), Momentum: 0.9}
				perTensor := whole
				perTensor.PerTensor = true
				want := newHarness(t, whole, oneTensorProblem(dtype))
				got := newHarness(t, perTensor, oneTensorProblem(dtype))
				assertSameRun(t, want, got, []string{"weights"}, 5, name)
			}
		}
	}
}
