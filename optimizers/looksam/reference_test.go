package looksam

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:staticcheck
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// refGradFn returns the loss and its gradient at w, computed in float64.
type refGradFn func(w map[string][]float64) (float64, map[string][]float64)

// refOptimizer is a float64 implementation of every rule over every base, written with plain
// slices and without any code of the package, so that the graphs can be checked against it. It
// reads the fields of a Config and fills the documented defaults itself.
type refOptimizer struct {
	rule                               Rule
	base                               BaseName
	rho, alpha                         float64
	k                                  int
	perTensor                          bool
	normEpsilon, projectionTol, eta    float64
	momentum                           float64
	nesterov                           bool
	beta1, beta2, adamEpsilon, decay   float64
	clipNorm                           float64
	noDecay                            []string
	store                              func(float64) float64 // rounds a weight to its storage dtype
	step                               int64
	adamM, adamV, sgdMomentum, storedG map[string][]float64
}

func newRefOptimizer(cfg Config, dtype dtypes.DType) *refOptimizer {
	r := &refOptimizer{
		rule: cfg.Rule, base: cfg.Base, rho: cfg.Rho, alpha: cfg.Alpha, k: cfg.K, perTensor: cfg.PerTensor,
		normEpsilon: cfg.NormEpsilon, projectionTol: cfg.ProjectionTolerance, eta: cfg.ASAMEta,
		momentum: cfg.Momentum, nesterov: cfg.Nesterov, beta1: cfg.Beta1, beta2: cfg.Beta2,
		adamEpsilon: cfg.AdamEpsilon, decay: cfg.WeightDecay, clipNorm: cfg.ClipNorm, noDecay: cfg.NoDecay,
		adamM: map[string][]float64{}, adamV: map[string][]float64{}, sgdMomentum: map[string][]float64{},
		storedG: map[string][]float64{},
	}
	if r.rule == "" {
		r.rule = RuleNone
	}
	if r.base == "" {
		r.base = BaseAdamW
	}
	if r.k == 0 {
		r.k = 1
		if r.rule == RuleSAMK || r.rule == RuleLookSAM || r.rule == RuleLookLayerSAM {
			r.k = 5
		}
	}
	defaults := []struct {
		field *float64
		value float64
	}{
		{&r.normEpsilon, 1e-12}, {&r.projectionTol, 1e-5}, {&r.eta, 0.01}, {&r.beta1, 0.9}, {&r.beta2, 0.999},
		{&r.adamEpsilon, 1e-8},
	}
	if r.base == BaseLAMB {
		defaults[len(defaults)-1].value = 1e-6
	}
	for _, d := range defaults {
		if *d.field == 0 {
			*d.field = d.value
		}
	}
	if r.noDecay == nil {
		r.noDecay = []string{"bias", "scale", "offset", "cls_token", "pos_embedding"}
	}
	r.store = func(x float64) float64 { return x }
	switch dtype {
	case dtypes.Float32:
		r.store = func(x float64) float64 { return float64(float32(x)) }
	case dtypes.BFloat16:
		// Rounding error of g and g_s in bfloat16 is taken for g_v below one machine epsilon.
		r.store = roundBFloat16
		r.projectionTol = max(r.projectionTol, math.Pow(2, -7))
	}
	return r
}

// roundBFloat16 rounds x to the nearest bfloat16 value, ties to even.
func roundBFloat16(x float64) float64 {
	bits := math.Float32bits(float32(x))
	bits += 0x7fff + (bits>>16)&1
	return float64(math.Float32frombits(bits &^ 0xffff))
}

// kind returns the kind of the 0-based step.
func (r *refOptimizer) kind(step int64) StepKind {
	switch r.rule {
	case RuleNone:
		return KindPlain
	case RuleSAMK:
		if step%int64(r.k) == 0 {
			return KindSAM
		}
		return KindPlain
	case RuleLookSAM, RuleLookLayerSAM:
		if step%int64(r.k) == 0 {
			return KindSAM
		}
		return KindReuse
	default:
		return KindSAM
	}
}

// reuses reports whether the rule stores g_v for reuse steps.
func (r *refOptimizer) reuses() bool { return r.rule == RuleLookSAM || r.rule == RuleLookLayerSAM }

// run takes one step on w in place and returns the diagnostics, NaN where the step kind does not
// compute one.
func (r *refOptimizer) run(w map[string][]float64, lr float64, f refGradFn) map[string]float64 {
	names := sortedNames(w)
	diag := map[string]float64{}
	for _, name := range Diagnostics {
		diag[name] = math.NaN()
	}
	loss, g := f(w)
	diag["loss"] = loss
	diag["grad_norm"] = refGlobalNorm(g, names)
	diag["param_norm"] = refGlobalNorm(w, names)

	var handed map[string][]float64
	switch kind := r.kind(r.step); kind {
	case KindPlain:
		handed = g
	case KindReuse:
		handed = r.reuseGradient(g, names)
		diag["g_v_norm"] = refGlobalNorm(r.storedG, names)
	case KindSAM:
		eps := r.perturbation(w, g, names)
		perturbed := map[string][]float64{}
		for _, name := range names {
			perturbed[name] = make([]float64, len(w[name]))
			for j := range w[name] {
				// The graph adds eps, rounded to the parameter dtype, in the parameter dtype.
				perturbed[name][j] = r.store(w[name][j] + r.store(eps[name][j]))
			}
		}
		_, gs := f(perturbed)
		gNorm, gsNorm := refGlobalNorm(g, names), refGlobalNorm(gs, names)
		diag["perturbation_norm"] = refGlobalNorm(eps, names)
		diag["perturbed_grad_norm"] = gsNorm
		diag["cos_theta"] = 0
		if gNorm*gsNorm > 0 {
			diag["cos_theta"] = refDot(g, gs, names) / (gNorm * gsNorm)
		}
		if r.reuses() {
			r.storedG = r.orthogonal(g, gs, names)
			diag["g_v_norm"] = refGlobalNorm(r.storedG, names)
		}
		handed = gs
	}

	if r.clipNorm > 0 {
		if total := refGlobalNorm(handed, names); total > r.clipNorm {
			handed = refScaled(handed, r.clipNorm/total)
		}
	}

	r.step++
	var updateSquares float64
	for _, name := range names {
		next := r.baseUpdate(name, w[name], handed[name], lr, float64(r.step))
		for j := range next {
			updateSquares += (next[j] - w[name][j]) * (next[j] - w[name][j])
			w[name][j] = r.store(next[j])
		}
	}
	diag["update_norm"] = math.Sqrt(updateSquares)
	return diag
}

// perturbation returns eps of the SAM, LayerSAM or ASAM rule.
func (r *refOptimizer) perturbation(w, g map[string][]float64, names []string) map[string][]float64 {
	eps := map[string][]float64{}
	switch r.rule {
	case RuleLayerSAM, RuleLookLayerSAM:
		// eps_i = rho (|w_i| / |g_i|) g_i / |g|, with |g_i| in place of |g| per tensor.
		total := refGlobalNorm(g, names)
		for _, name := range names {
			gi := refNorm(g[name])
			denominator := total
			if r.perTensor {
				denominator = gi
			}
			eps[name] = refScale(g[name], r.quotient(refNorm(w[name]), gi)*r.quotient(r.rho, denominator))
		}
	case RuleASAM:
		// eps = rho T^2 g / |T g| with T = |w| + eta element-wise.
		tg := map[string][]float64{}
		for _, name := range names {
			tg[name] = make([]float64, len(g[name]))
			for j := range g[name] {
				tg[name][j] = (math.Abs(w[name][j]) + r.eta) * g[name][j]
			}
		}
		total := refGlobalNorm(tg, names)
		for _, name := range names {
			denominator := total
			if r.perTensor {
				denominator = refNorm(tg[name])
			}
			scale := r.quotient(r.rho, denominator)
			eps[name] = make([]float64, len(g[name]))
			for j := range g[name] {
				eps[name][j] = scale * (math.Abs(w[name][j]) + r.eta) * tg[name][j]
			}
		}
	default:
		// eps = rho g / |g|.
		total := refGlobalNorm(g, names)
		for _, name := range names {
			denominator := total
			if r.perTensor {
				denominator = refNorm(g[name])
			}
			eps[name] = refScale(g[name], r.quotient(r.rho, denominator))
		}
	}
	return eps
}

// orthogonal returns g_v = g_s - (<g, g_s> / |g|^2) g over the whole vector or per tensor, zeroed
// when |g_v| <= ProjectionTolerance |g_s|.
func (r *refOptimizer) orthogonal(g, gs map[string][]float64, names []string) map[string][]float64 {
	groups := [][]string{names}
	if r.perTensor {
		groups = nil
		for _, name := range names {
			groups = append(groups, []string{name})
		}
	}
	gv := map[string][]float64{}
	for _, group := range groups {
		gSquares := math.Pow(refGlobalNorm(g, group), 2)
		coefficient := 0.0
		if gSquares > 0 {
			coefficient = refDot(g, gs, group) / gSquares
		}
		for _, name := range group {
			gv[name] = make([]float64, len(g[name]))
			for j := range g[name] {
				gv[name][j] = gs[name][j] - coefficient*g[name][j]
			}
		}
		if refGlobalNorm(gv, group) <= r.projectionTol*refGlobalNorm(gs, group) {
			for _, name := range group {
				gv[name] = make([]float64, len(g[name]))
			}
		}
	}
	return gv
}

// reuseGradient returns g + alpha (|g| / |g_v|) g_v with the stored g_v.
func (r *refOptimizer) reuseGradient(g map[string][]float64, names []string) map[string][]float64 {
	gv := map[string][]float64{}
	for _, name := range names {
		gv[name] = r.storedG[name]
		if gv[name] == nil {
			gv[name] = make([]float64, len(g[name]))
		}
	}
	out := map[string][]float64{}
	whole := r.alpha * r.quotient(refGlobalNorm(g, names), refGlobalNorm(gv, names))
	for _, name := range names {
		coefficient := whole
		if r.perTensor {
			coefficient = r.alpha * r.quotient(refNorm(g[name]), refNorm(gv[name]))
		}
		out[name] = make([]float64, len(g[name]))
		for j := range g[name] {
			out[name][j] = g[name][j] + coefficient*gv[name][j]
		}
	}
	return out
}

// quotient returns num / (den + NormEpsilon), or 0 when den is 0.
func (r *refOptimizer) quotient(num, den float64) float64 {
	if den == 0 {
		return 0
	}
	return num / (den + r.normEpsilon)
}

// baseUpdate returns the new value of one tensor after the base optimizer with gradient g at
// bias-correction count t, and updates that tensor's state.
func (r *refOptimizer) baseUpdate(name string, w, g []float64, lr, t float64) []float64 {
	decays := !slices.Contains(r.noDecay, name)
	next := make([]float64, len(w))
	if r.base == BaseSGD {
		buffer := r.sgdMomentum[name]
		if buffer == nil {
			buffer = make([]float64, len(w))
		}
		for j := range w {
			d := g[j]
			if decays {
				d += r.decay * w[j] // L2 decay, inside the gradient
			}
			step := d
			if r.momentum > 0 {
				buffer[j] = r.momentum*buffer[j] + d
				step = buffer[j]
				if r.nesterov {
					step = d + r.momentum*buffer[j]
				}
			}
			next[j] = w[j] - lr*step
		}
		if r.momentum > 0 {
			r.sgdMomentum[name] = buffer
		}
		return next
	}

	m, v := r.adamM[name], r.adamV[name]
	if m == nil {
		m, v = make([]float64, len(w)), make([]float64, len(w))
	}
	direction := make([]float64, len(w))
	for j := range w {
		m[j] = r.beta1*m[j] + (1-r.beta1)*g[j]
		v[j] = r.beta2*v[j] + (1-r.beta2)*g[j]*g[j]
		mHat := m[j] / (1 - math.Pow(r.beta1, t))
		vHat := v[j] / (1 - math.Pow(r.beta2, t))
		direction[j] = mHat / (math.Sqrt(vHat) + r.adamEpsilon)
		if decays {
			direction[j] += r.decay * w[j] // decoupled decay
		}
	}
	r.adamM[name], r.adamV[name] = m, v
	if r.base == BaseLAMB && decays {
		wNorm, dNorm := refNorm(w), refNorm(direction)
		if wNorm > 0 && dNorm > 0 {
			direction = refScale(direction, wNorm/dNorm)
		}
	}
	for j := range w {
		next[j] = w[j] - lr*direction[j]
	}
	return next
}

func sortedNames(w map[string][]float64) []string {
	names := make([]string, 0, len(w))
	for name := range w {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

func refNorm(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += v * v
	}
	return math.Sqrt(s)
}

func refGlobalNorm(x map[string][]float64, names []string) float64 {
	var s float64
	for _, name := range names {
		s += math.Pow(refNorm(x[name]), 2)
	}
	return math.Sqrt(s)
}

func refDot(a, b map[string][]float64, names []string) float64 {
	var s float64
	for _, name := range names {
		for j := range a[name] {
			s += a[name][j] * b[name][j]
		}
	}
	return s
}

func refScale(x []float64, s float64) []float64 {
	out := make([]float64, len(x))
	for j, v := range x {
		out[j] = v * s
	}
	return out
}

func refScaled(x map[string][]float64, s float64) map[string][]float64 {
	out := map[string][]float64{}
	for name, v := range x {
		out[name] = refScale(v, s)
	}
	return out
}

// mixedProblem is a loss over three tensors, with a graph for the harness and a float64 gradient
// for the reference:
//
//	L = 0.5 a^T A a + b^T a + lse(M c + P bias) + gamma (u^T a)(v^T c) + 0.5 bias^T D bias
//
// A is a random SPD matrix and D = diag(0.5, 3). The log-sum-exp and the product make g_s not parallel to g. Every
// constant is a float32 value, so float32 and float64 problems share the same function.
type mixedProblem struct {
	A, M, P    [][]float64
	b, u, v, d []float64
	gamma      float64
	init       map[string][]float64
}

func newMixedProblem(seed uint64) *mixedProblem {
	rng := rand.New(rand.NewPCG(seed, 7))
	normal := func() float64 { return float64(float32(rng.NormFloat64())) }
	vector := func(n int) []float64 {
		out := make([]float64, n)
		for i := range out {
			out[i] = normal()
		}
		return out
	}
	matrix := func(rows, cols int) [][]float64 {
		out := make([][]float64, rows)
		for i := range out {
			out[i] = vector(cols)
		}
		return out
	}
	// A = B^T B / 4 + 0.5 I, rounded to float32 after the sum so that it stays symmetric.
	B := matrix(4, 4)
	A := make([][]float64, 4)
	for i := range A {
		A[i] = make([]float64, 4)
		for j := range A[i] {
			for k := range B {
				A[i][j] += B[k][i] * B[k][j] / 4
			}
			if i == j {
				A[i][j] += 0.5
			}
			A[i][j] = float64(float32(A[i][j]))
		}
	}
	return &mixedProblem{
		A: A, M: matrix(3, 3), P: matrix(3, 2), b: vector(4), u: vector(4), v: vector(3), d: []float64{0.5, 3}, gamma: 0.5,
		init: map[string][]float64{"a": vector(4), "c": vector(3), "bias": vector(2)},
	}
}

// problem returns the graph version of the loss in dtype.
func (p *mixedProblem) problem(dtype dtypes.DType) problem {
	params := map[string][]float64{}
	for name, v := range p.init {
		params[name] = slices.Clone(v)
	}
	return problem{
		dtype: dtype, params: params, order: []string{"a", "bias", "c"},
		loss: func(w map[string]*Node) *Node {
			a, c, bias := w["a"], w["c"], w["bias"]
			constant := func(value any) *Node { return ConvertDType(Const(a.Graph(), value), a.DType()) }
			quadratic := MulScalar(ReduceAllSum(Mul(a, Dot(constant(p.A), a))), 0.5)
			linearTerm := ReduceAllSum(Mul(constant(p.b), a))
			logits := Add(Dot(constant(p.M), c), Dot(constant(p.P), bias))
			logSumExp := Log(ReduceAllSum(Exp(logits)))
			product := MulScalar(Mul(ReduceAllSum(Mul(constant(p.u), a)), ReduceAllSum(Mul(constant(p.v), c))), p.gamma)
			regularizer := MulScalar(ReduceAllSum(Mul(constant(p.d), Square(bias))), 0.5)
			return Add(Add(Add(quadratic, linearTerm), Add(logSumExp, product)), regularizer)
		},
	}
}

// gradient is the float64 loss and gradient of the problem.
func (p *mixedProblem) gradient(w map[string][]float64) (float64, map[string][]float64) {
	a, c, bias := w["a"], w["c"], w["bias"]
	matVec := func(m [][]float64, x []float64) []float64 {
		out := make([]float64, len(m))
		for i := range m {
			for j := range x {
				out[i] += m[i][j] * x[j]
			}
		}
		return out
	}
	dotProduct := func(x, y []float64) float64 {
		var s float64
		for i := range x {
			s += x[i] * y[i]
		}
		return s
	}
	aA := matVec(p.A, a)
	logits := matVec(p.M, c)
	for i, z := range matVec(p.P, bias) {
		logits[i] += z
	}
	var sumExp float64
	for _, z := range logits {
		sumExp += math.Exp(z)
	}
	softmax := make([]float64, len(logits))
	for i, z := range logits {
		softmax[i] = math.Exp(z) / sumExp
	}
	ua, vc := dotProduct(p.u, a), dotProduct(p.v, c)
	loss := 0.5*dotProduct(a, aA) + dotProduct(p.b, a) + math.Log(sumExp) + p.gamma*ua*vc
	for j := range bias {
		loss += 0.5 * p.d[j] * bias[j] * bias[j]
	}

	grad := map[string][]float64{"a": make([]float64, 4), "c": make([]float64, 3), "bias": make([]float64, 2)}
	for i := range a {
		grad["a"][i] = aA[i] + p.b[i] + p.gamma*vc*p.u[i]
	}
	for j := range c {
		for i := range softmax {
			grad["c"][j] += p.M[i][j] * softmax[i]
		}
		grad["c"][j] += p.gamma * ua * p.v[j]
	}
	for j := range bias {
		for i := range softmax {
			grad["bias"][j] += p.P[i][j] * softmax[i]
		}
		grad["bias"][j] += p.d[j] * bias[j]
	}
	return loss, grad
}

// assertTensorClose checks got against want element-wise with the tolerance
// rtol (|want_i| + max_j |want_j|), relative to the element and to the tensor's scale, so that an
// element near zero by cancellation is held to the precision of the tensor.
func assertTensorClose(t testing.TB, want, got []float64, rtol float64, msg string) {
	t.Helper()
	require.Len(t, got, len(want), msg)
	var scale float64
	for _, v := range want {
		scale = max(scale, math.Abs(v))
	}
	for i := range want {
		limit := rtol * (math.Abs(want[i]) + scale)
		if diff := math.Abs(got[i] - want[i]); !(diff <= limit) {
			t.Errorf("%s: element %d: got %.9g, want %.9g (|diff| %.3g > %.3g)", msg, i, got[i], want[i], diff, limit)
		}
	}
}

// referenceVariant is one configuration of the reference comparison.
type referenceVariant struct {
	name string
	cfg  Config
}

// referenceVariants returns the configurations compared with the reference for one rule and base:
// whole-vector and per-tensor norms, SGD without momentum, with momentum and with Nesterov
// momentum, and gradient clipping. Weight decay is on, and the tensor "bias" is excluded from it.
func referenceVariants(rule Rule, base BaseName) []referenceVariant {
	common := Config{Rule: rule, Base: base, Rho: 0.1, K: kFor(rule, 3), Alpha: 0.5, WeightDecay: 0.05,
		NoDecay: []string{"bias"}}
	if rule == RuleASAM {
		common.Rho = 0.5
	}
	var variants []referenceVariant
	for _, perTensor := range []bool{false, true} {
		add := func(name string, change func(*Config)) {
			cfg := common
			cfg.PerTensor = perTensor
			change(&cfg)
			variants = append(variants, referenceVariant{fmt.Sprintf("%s/perTensor=%v", name, perTensor), cfg})
		}
		if base == BaseSGD {
			add("plain", func(*Config) {})
			add("momentum", func(c *Config) { c.Momentum = 0.9 })
			add("nesterov", func(c *Config) { c.Momentum, c.Nesterov = 0.9, true })
			add("nesterov+clip", func(c *Config) { c.Momentum, c.Nesterov, c.ClipNorm = 0.9, true, 0.5 })
		} else {
			add("default", func(*Config) {})
			add("clip", func(c *Config) { c.ClipNorm = 0.5 })
		}
	}
	return variants
}

// stateKinds returns the optimizer buffers that cfg keeps per parameter.
func stateKinds(cfg Config) []string {
	var kinds []string
	switch cfg.Base {
	case BaseSGD:
		if cfg.Momentum > 0 {
			kinds = append(kinds, "sgd_momentum")
		}
	default:
		kinds = append(kinds, "adam_m", "adam_v")
	}
	if cfg.Rule == RuleLookSAM || cfg.Rule == RuleLookLayerSAM {
		kinds = append(kinds, "g_v")
	}
	return kinds
}

// refState returns the reference's buffer of the given kind for a parameter, zeros where the
// reference has not created it yet.
func (r *refOptimizer) refState(kind, name string, size int) []float64 {
	buffers := map[string]map[string][]float64{"adam_m": r.adamM, "adam_v": r.adamV, "sgd_momentum": r.sgdMomentum,
		"g_v": r.storedG}
	if v := buffers[kind][name]; v != nil {
		return v
	}
	return make([]float64, size)
}

func TestRulesMatchReference(t *testing.T) {
	const steps = 6
	tolerances := map[dtypes.DType]float64{dtypes.Float64: 1e-9, dtypes.Float32: 1e-4}
	// The diagnostics are float32 whatever the parameter dtype.
	diagnosticTolerance := map[dtypes.DType]float64{dtypes.Float64: 1e-6, dtypes.Float32: 1e-4}
	for _, dtype := range []dtypes.DType{dtypes.Float64, dtypes.Float32} {
		for _, rule := range Rules {
			for _, base := range Bases {
				for vi, variant := range referenceVariants(rule, base) {
					name := fmt.Sprintf("%s/%s/%s/%s", dtype, rule, base, variant.name)
					mixed := newMixedProblem(uint64(100 + vi))
					h := newHarness(t, variant.cfg, mixed.problem(dtype))
					ref := newRefOptimizer(variant.cfg, dtype)
					w := map[string][]float64{}
					for param, v := range mixed.init {
						w[param] = slices.Clone(v)
					}
					if dtype == dtypes.Float32 {
						for _, v := range w {
							for j := range v {
								v[j] = float64(float32(v[j]))
							}
						}
					}
					for step := range steps {
						// The harness passes the learning rate as float32.
						lr := float64(float32(0.05 * (1 - 0.1*float64(step))))
						at := fmt.Sprintf("%s: step %d (%s)", name, step, ref.kind(int64(step)))
						require.Equal(t, ref.kind(int64(step)), h.opt.Kind(int64(step)), at)
						got := h.run(lr)
						want := ref.run(w, lr, mixed.gradient)
						for _, param := range sortedNames(w) {
							assertTensorClose(t, w[param], h.weights(param), tolerances[dtype], at+": "+param)
							for _, kind := range stateKinds(variant.cfg) {
								assertTensorClose(t, ref.refState(kind, param, len(w[param])),
									h.value("/optimizer/"+kind+"/model", param), tolerances[dtype], at+": "+kind+" of "+param)
							}
						}
						assert.Equal(t, []float64{float64(step + 1)}, h.value(StateScope, StepVariable), at+": step counter")
						for _, key := range Diagnostics {
							if math.IsNaN(want[key]) {
								assert.True(t, math.IsNaN(got[key]), "%s: diagnostic %s: got %v, want NaN", at, key, got[key])
								continue
							}
							assert.InDelta(t, want[key], got[key], diagnosticTolerance[dtype]*(1+math.Abs(want[key])),
								"%s: diagnostic %s", at, key)
						}
					}
				}
			}
		}
	}
}

func TestBFloat16MatchesReference(t *testing.T) {
	// The graph computes the loss and its gradients in bfloat16, so it agrees with the exact
	// reference, which rounds only the stored weights, to a few bfloat16 epsilons (2^-7).
	const steps, tolerance = 4, 0.03
	for _, rule := range Rules {
		for _, base := range Bases {
			for _, perTensor := range []bool{false, true} {
				name := fmt.Sprintf("%s/%s/perTensor=%v", rule, base, perTensor)
				cfg := Config{Rule: rule, Base: base, Rho: 0.1, K: kFor(rule, 2), Alpha: 0.5, PerTensor: perTensor,
					Momentum: 0.9, WeightDecay: 0.05, NoDecay: []string{"bias"}}
				mixed := newMixedProblem(21)
				h := newHarness(t, cfg, mixed.problem(dtypes.BFloat16))
				ref := newRefOptimizer(cfg, dtypes.BFloat16)
				w := map[string][]float64{}
				for param, v := range mixed.init {
					w[param] = make([]float64, len(v))
					for j := range v {
						w[param][j] = roundBFloat16(v[j])
					}
				}
				for step := range steps {
					lr := float64(float32(0.05))
					h.run(lr)
					ref.run(w, lr, mixed.gradient)
					for _, param := range sortedNames(w) {
						assertTensorClose(t, w[param], h.weights(param), tolerance, fmt.Sprintf("%s: step %d: %s", name, step, param))
					}
				}

				// The optimizer's buffers are float32 for bfloat16 parameters.
				for _, kind := range stateKinds(cfg) {
					for _, param := range sortedNames(w) {
						v := h.ctx.GetVariableByScopeAndName(StateScope+"/"+kind+"/model", param)
						assert.Equal(t, dtypes.Float32, v.DType(), "%s: dtype of %s of %s", name, kind, param)
					}
				}
			}
		}
	}
}

func TestWeightDecayOnceAndNotOnBias(t *testing.T) {
	// With a zero gradient only weight decay moves the weights. One step at lr 0.1 with decay 0.5
	// scales "a" by 1 - lr lambda = 0.95 under SGD (L2) and AdamW (decoupled), and moves it by
	// lr |a| in the direction of -a under LAMB (trust ratio |a| / |lambda a|): 0.9 a. SAM steps
	// decay once, at the unperturbed weights. "bias" is in NoDecay and the default list.
	const lr, decay = 0.1, 0.5
	// The shrink rate per unit of learning rate; the learning rate reaches the graph as float32.
	rate := map[BaseName]float64{BaseSGD: decay, BaseAdamW: decay, BaseLAMB: 1}
	lr32 := float64(float32(lr))
	for _, noDecay := range [][]string{{"bias"}, nil} {
		for _, rule := range Rules {
			for _, base := range Bases {
				name := fmt.Sprintf("%s/%s/NoDecay=%v", rule, base, noDecay)
				p := problem{
					dtype: dtypes.Float64, params: map[string][]float64{"a": {3, -4}, "bias": {1, 2}}, order: []string{"a", "bias"},
					loss: func(w map[string]*Node) *Node {
						return MulScalar(Add(ReduceAllSum(w["a"]), ReduceAllSum(w["bias"])), 0)
					},
				}
				h := newHarness(t, Config{Rule: rule, Base: base, Rho: 0.1, Alpha: 0.7, K: kFor(rule, 2), Momentum: 0.9,
					WeightDecay: decay, NoDecay: noDecay}, p)
				h.run(lr)
				scale := 1 - lr32*rate[base]
				assertClose(t, []float64{3 * scale, -4 * scale}, h.weights("a"), 1e-12, name+": a")
				assert.Equal(t, []float64{1, 2}, h.weights("bias"), "%s: bias", name)
			}
		}
	}
}
