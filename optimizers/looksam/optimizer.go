package looksam

import (
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:staticcheck // GoMLX graph code reads best with the ops unqualified.
	"github.com/gomlx/gomlx/pkg/ml/context"
)

// Optimizer is a validated sharpness-aware optimizer. It builds the graph of each step kind; the
// caller compiles one program per kind and runs the kind that Kind returns for each step.
type Optimizer struct {
	cfg  Config
	spec ruleSpec
}

// New validates cfg, fills its defaults and returns the optimizer.
func New(cfg Config) (*Optimizer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Optimizer{cfg: cfg, spec: ruleSpecs[cfg.Rule]}, nil
}

// Config returns the configuration with its defaults filled in.
func (o *Optimizer) Config() Config { return o.cfg }

// Kind returns the kind of the step with the given 0-based number: a SAM step when
// step mod K = 0 for the k-rules, on every step for sam, layersam and asam, and never for none.
func (o *Optimizer) Kind(step int64) StepKind {
	switch {
	case o.spec.perturbation == perturbNone:
		return KindPlain
	case o.spec.between == betweenNone || step%int64(o.cfg.K) == 0:
		return KindSAM
	case o.spec.between == betweenReuse:
		return KindReuse
	default:
		return KindPlain
	}
}

// Kinds returns the step kinds that this optimizer runs, so one program per kind can be built.
func (o *Optimizer) Kinds() []StepKind {
	switch {
	case o.spec.perturbation == perturbNone:
		return []StepKind{KindPlain}
	case o.spec.between == betweenNone || o.cfg.K == 1:
		return []StepKind{KindSAM}
	case o.spec.between == betweenReuse:
		return []StepKind{KindSAM, KindReuse}
	default:
		return []StepKind{KindSAM, KindPlain}
	}
}

// LossFn builds the scalar loss of the current batch at the current values of the context's
// variables. A SAM step calls it twice, the second time with every trainable variable set to
// w + eps. Both calls must use the same batch and the same dropout masks.
type LossFn func(ctx *context.Context) *Node

// Diagnostics are the per-step values that BuildStep returns, in this order, as a float32 vector.
// A value that a step kind does not compute is NaN.
var Diagnostics = []string{
	"loss",                // loss at w
	"grad_norm",           // |g|
	"perturbed_grad_norm", // |g_s| (SAM steps)
	"g_v_norm",            // |g_v|: the stored value after a SAM step, the one used on a reuse step
	"cos_theta",           // cos(theta) = <g, g_s> / (|g| |g_s|) (SAM steps)
	"perturbation_norm",   // |eps| (SAM steps)
	"update_norm",         // |w_{t+1} - w_t|
	"param_norm",          // |w_t|
}

// StepVariable is the name of the int64 step counter in StateScope, shared by all step programs.
const StepVariable = "step"

// BuildStep builds one training step of the given kind in the graph of learningRate, updates the
// context's trainable variables and optimizer state, and returns the Diagnostics vector.
//
// The step counter t (StepVariable) is read for bias correction and incremented once per step,
// whatever the kind.
func (o *Optimizer) BuildStep(ctx *context.Context, kind StepKind, learningRate *Node, lossFn LossFn) *Node {
	return o.BuildStepWith(ctx, kind, learningRate, lossFn, StepOptions{})
}

// StepOptions configures BuildStepWith for data-parallel training, where the graph is the program
// of one replica and sees only its shard of the batch.
type StepOptions struct {
	// MeanAcrossReplicas returns the mean of x over all replicas (an all-reduce); nil means a
	// single replica. The loss, g and g_s are averaged with it, so the weights, the optimizer state
	// and g_v stay identical on every replica.
	MeanAcrossReplicas func(x *Node) *Node
	// PerReplicaPerturbation computes eps on each replica from its local gradient, as in the
	// original SAM code's m-sharpness (Foret et al., Sec. 4.1), and averages the resulting g_s.
	// Otherwise eps comes from the averaged g and is the same on every replica.
	PerReplicaPerturbation bool
}

// BuildStepWith is BuildStep with data-parallel options. A SAM step runs, in order:
//
//  1. the local g, then its mean across replicas (an all-reduce);
//  2. eps from the mean g, or from the local g with PerReplicaPerturbation;
//  3. the local g_s at w + eps, then its mean (an all-reduce);
//  4. clipping, and the base update at w.
func (o *Optimizer) BuildStepWith(ctx *context.Context, kind StepKind, learningRate *Node, lossFn LossFn, opts StepOptions) *Node {
	if !slices.Contains(o.Kinds(), kind) {
		panic(fmt.Sprintf("looksam: rule %q does not run %q steps; it runs %v", o.cfg.Rule, kind, o.Kinds()))
	}
	graph := learningRate.Graph()

	// Loss and gradient g at w.
	loss := lossFn(ctx)
	vars := trainableVariables(ctx, graph)
	if len(vars) == 0 {
		panic("looksam: the loss uses no trainable variable")
	}
	weightNodes := make([]*Node, len(vars))
	for i, v := range vars {
		weightNodes[i] = v.ValueGraph(graph)
	}
	rawGrads := Gradient(loss, weightNodes...)
	weights, localGrads := toAccAll(weightNodes), toAccAll(rawGrads)
	grads := opts.meanAll(localGrads)
	acc := weights[0].DType()
	d := newDiagnostics(graph)
	d.set("loss", opts.mean(loss))
	d.set("grad_norm", globalNorm(grads))
	d.set("param_norm", globalNorm(weights))

	// The gradient handed to the base optimizer.
	var baseGrads []*Node
	switch kind {
	case KindPlain:
		baseGrads = grads
	case KindReuse:
		baseGrads = o.reuseGradient(ctx, vars, grads, d)
	case KindSAM:
		perturbFrom := grads
		if opts.PerReplicaPerturbation {
			perturbFrom = localGrads
		}
		baseGrads = o.samGradient(ctx, vars, weightNodes, weights, grads, perturbFrom, lossFn, opts, d)
	}
	if o.cfg.ClipNorm > 0 {
		baseGrads = clipByGlobalNorm(baseGrads, o.cfg.ClipNorm)
	}

	// Base optimizer update at the unperturbed weights, with t = step + 1.
	stepVar := ctx.InAbsPath(StateScope).Checked(false).VariableWithValue(StepVariable, int64(0))
	stepVar.SetTrainable(false)
	step := stepVar.ValueGraph(graph)
	newWeights := o.applyBase(ctx, baseUpdate{
		vars:         vars,
		weights:      weights,
		grads:        baseGrads,
		learningRate: ConvertDType(learningRate, acc),
		count:        ConvertDType(AddScalar(step, 1), acc),
	})
	stepVar.SetValueGraph(AddScalar(step, 1))
	updates := make([]*Node, len(vars))
	for i, v := range vars {
		updates[i] = Sub(newWeights[i], weights[i])
		v.SetValueGraph(ConvertDType(newWeights[i], v.DType()))
	}
	d.set("update_norm", globalNorm(updates))
	return d.vector()
}

// samGradient returns g_s, the gradient at w + eps, and for LookSAM stores g_v. It leaves every
// variable at w.
//
// grads is the gradient g at w averaged over replicas. perturbFrom is the gradient that eps is
// computed from: grads, or the local gradient for a per-replica perturbation.
func (o *Optimizer) samGradient(ctx *context.Context, vars []*context.Variable, weightNodes, weights, grads, perturbFrom []*Node,
	lossFn LossFn, opts StepOptions, d *diagnostics) []*Node {
	// Perturbation eps, computed from g without a gradient path.
	eps := o.perturbation(weights, perturbFrom)
	d.set("perturbation_norm", opts.mean(globalNorm(eps)))

	// Gradient g_s at w + eps on the same batch.
	perturbed := make([]*Node, len(vars))
	for i, v := range vars {
		perturbed[i] = Add(weightNodes[i], ConvertDType(StopGradient(eps[i]), v.DType()))
		v.SetValueGraph(perturbed[i])
	}
	perturbedLoss := lossFn(ctx)
	gs := opts.meanAll(toAccAll(Gradient(perturbedLoss, perturbed...)))

	// Remove the perturbation before the base optimizer sees the weights.
	for i, v := range vars {
		v.SetValueGraph(weightNodes[i])
	}

	gsNorm := globalNorm(gs)
	gNorm := globalNorm(grads)
	d.set("perturbed_grad_norm", gsNorm)
	d.set("cos_theta", safeDiv(dot(grads, gs), Mul(gNorm, gsNorm), 0))
	if o.spec.between == betweenReuse {
		gv := o.orthogonalComponent(grads, gs, vars[0].DType())
		for i, v := range vars {
			stateVariable(ctx, "g_v", v).SetValueGraph(gv[i])
		}
		d.set("g_v_norm", globalNorm(gv))
	}
	return gs
}

// perturbation returns eps for the configured rule:
//
//	SAM      eps   = rho g / |g|                        (Foret et al., Eq. 2)
//	LayerSAM eps_i = rho (|w_i| / |g_i|) g_i / |g|      (Liu et al., Eq. 7 with p = 2)
//	ASAM     eps   = rho T^2 g / |T g|, T = |w| + eta   (Kwon et al., Eq. 10 with p = 2)
//
// |g| is the global norm, or |g_i| when PerTensor is set. A zero norm gives a zero perturbation.
func (o *Optimizer) perturbation(weights, grads []*Node) []*Node {
	rho, epsilon := o.cfg.Rho, o.cfg.NormEpsilon
	graph := grads[0].Graph()
	acc := grads[0].DType()
	rhoNode := Scalar(graph, acc, rho)
	eps := make([]*Node, len(grads))

	switch o.spec.perturbation {
	case perturbGlobal:
		if o.cfg.PerTensor {
			for i, g := range grads {
				eps[i] = Mul(g, safeDiv(rhoNode, norm(g), epsilon))
			}
		} else {
			return scaleAll(grads, safeDiv(rhoNode, globalNorm(grads), epsilon))
		}

	case perturbLayer:
		gradNorms := norms(grads)
		total := globalNorm(grads)
		for i, g := range grads {
			denominator := total
			if o.cfg.PerTensor {
				denominator = gradNorms[i]
			}
			layerRatio := safeDiv(norm(weights[i]), gradNorms[i], epsilon) // |w_i| / |g_i|
			if o.cfg.LayerRatioMax > 0 {
				layerRatio = Min(layerRatio, Scalar(graph, acc, o.cfg.LayerRatioMax))
			}
			eps[i] = Mul(g, Mul(layerRatio, safeDiv(rhoNode, denominator, epsilon)))
		}

	case perturbAdaptive:
		scaled := make([]*Node, len(grads)) // T g
		scales := make([]*Node, len(grads)) // T
		for i, g := range grads {
			scales[i] = AddScalar(Abs(weights[i]), o.cfg.ASAMEta)
			scaled[i] = Mul(scales[i], g)
		}
		total := globalNorm(scaled)
		for i := range grads {
			denominator := total
			if o.cfg.PerTensor {
				denominator = norm(scaled[i])
			}
			eps[i] = Mul(Mul(scales[i], scaled[i]), safeDiv(rhoNode, denominator, epsilon))
		}
	}
	return eps
}

// orthogonalComponent returns g_v, the part of g_s orthogonal to g (Liu et al., Eq. 4):
//
//	g_v = g_s - |g_s| cos(theta) g / |g| = g_s - (<g, g_s> / |g|^2) g
//
// over the whole vector, or per tensor when PerTensor is set. g_v is set to zero when
// |g_v| <= ProjectionTolerance * |g_s|, and when |g| = 0 it is g_s. A NaN in g or g_s fails that
// comparison and stays in g_v.
func (o *Optimizer) orthogonalComponent(grads, gs []*Node, paramDType dtypes.DType) []*Node {
	tolerance := o.projectionTolerance(paramDType)
	project := func(g, gsPart []*Node) []*Node {
		coefficient := safeDiv(dot(g, gsPart), sumSquaresAll(g), 0)
		gv := make([]*Node, len(g))
		for i := range g {
			gv[i] = Sub(gsPart[i], Mul(g[i], coefficient))
		}
		roundingError := LessOrEqual(globalNorm(gv), MulScalar(globalNorm(gsPart), tolerance))
		for i := range gv {
			gv[i] = Where(roundingError, ZerosLike(gv[i]), gv[i])
		}
		return gv
	}
	if !o.cfg.PerTensor {
		return project(grads, gs)
	}
	gv := make([]*Node, len(grads))
	for i := range grads {
		gv[i] = project(grads[i:i+1], gs[i:i+1])[0]
	}
	return gv
}

// projectionTolerance returns ProjectionTolerance, raised to one machine epsilon of the parameter
// dtype for float16 (2^-10) and bfloat16 (2^-7): g and g_s rounded to these dtypes leave a g_v of
// up to about that relative size even when g_s is parallel to g.
func (o *Optimizer) projectionTolerance(paramDType dtypes.DType) float64 {
	tolerance := o.cfg.ProjectionTolerance
	switch paramDType {
	case dtypes.Float16:
		tolerance = max(tolerance, math.Pow(2, -10))
	case dtypes.BFloat16:
		tolerance = max(tolerance, math.Pow(2, -7))
	}
	return tolerance
}

// reuseGradient returns the LookSAM reuse gradient (Liu et al., Eq. 5):
//
//	g + alpha (|g| / |g_v|) g_v
//
// with norms over the whole vector, or per tensor when PerTensor is set. A zero g_v leaves g
// unchanged.
func (o *Optimizer) reuseGradient(ctx *context.Context, vars []*context.Variable, grads []*Node, d *diagnostics) []*Node {
	graph := grads[0].Graph()
	gv := make([]*Node, len(vars))
	for i, v := range vars {
		gv[i] = stateVariable(ctx, "g_v", v).ValueGraph(graph)
	}
	d.set("g_v_norm", globalNorm(gv))
	alpha := Scalar(graph, grads[0].DType(), o.cfg.Alpha)
	out := make([]*Node, len(grads))
	if !o.cfg.PerTensor {
		coefficient := Mul(alpha, safeDiv(globalNorm(grads), globalNorm(gv), o.cfg.NormEpsilon))
		for i, g := range grads {
			out[i] = Add(g, Mul(gv[i], coefficient))
		}
		return out
	}
	for i, g := range grads {
		coefficient := Mul(alpha, safeDiv(norm(g), norm(gv[i]), o.cfg.NormEpsilon))
		out[i] = Add(g, Mul(gv[i], coefficient))
	}
	return out
}

// mean returns the mean of x across replicas, or x for a single replica.
func (opts StepOptions) mean(x *Node) *Node {
	if opts.MeanAcrossReplicas == nil {
		return x
	}
	return opts.MeanAcrossReplicas(x)
}

// meanAll applies mean to every tensor.
func (opts StepOptions) meanAll(xs []*Node) []*Node {
	if opts.MeanAcrossReplicas == nil {
		return xs
	}
	out := make([]*Node, len(xs))
	for i, x := range xs {
		out[i] = opts.MeanAcrossReplicas(x)
	}
	return out
}

// clipByGlobalNorm rescales the gradients so that their global norm is at most maxNorm.
func clipByGlobalNorm(grads []*Node, maxNorm float64) []*Node {
	total := globalNorm(grads)
	limit := Scalar(total.Graph(), total.DType(), maxNorm)
	factor := Where(GreaterThan(total, limit), Div(limit, Max(total, limit)), ScalarOne(total.Graph(), total.DType()))
	return scaleAll(grads, factor)
}

// sumSquaresAll returns the sum of squares over all tensors, |x|^2.
func sumSquaresAll(xs []*Node) *Node {
	total := sumSquares(xs[0])
	for _, x := range xs[1:] {
		total = Add(total, sumSquares(x))
	}
	return total
}

// trainableVariables returns the trainable variables that the graph uses, sorted by scope and name
// so that every program sees them in the same order.
func trainableVariables(ctx *context.Context, graph *Graph) []*context.Variable {
	var vars []*context.Variable
	for v := range ctx.IterVariables() {
		if v.Trainable && v.InUseByGraph(graph) {
			vars = append(vars, v)
		}
	}
	sort.Slice(vars, func(i, j int) bool { return vars[i].ScopeAndName() < vars[j].ScopeAndName() })
	return vars
}

// diagnostics collects the Diagnostics scalars of one step.
type diagnostics struct {
	graph  *Graph
	values map[string]*Node
}

func newDiagnostics(graph *Graph) *diagnostics {
	return &diagnostics{graph: graph, values: map[string]*Node{}}
}

func (d *diagnostics) set(name string, value *Node) {
	if !slices.Contains(Diagnostics, name) {
		panic(fmt.Sprintf("looksam: unknown diagnostic %q", name))
	}
	d.values[name] = ConvertDType(value, dtypes.Float32)
}

// vector returns the Diagnostics as a float32 vector, NaN where a value was not set.
func (d *diagnostics) vector() *Node {
	parts := make([]*Node, len(Diagnostics))
	for i, name := range Diagnostics {
		if v, ok := d.values[name]; ok {
			parts[i] = v
		} else {
			parts[i] = Scalar(d.graph, dtypes.Float32, math.NaN())
		}
	}
	return Stack(parts, 0)
}
