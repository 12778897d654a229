package looksam

import (
	"path"
	"slices"

	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:staticcheck // GoMLX graph code reads best with the ops unqualified.
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
)

// StateScope is the context scope under which every optimizer buffer lives. A buffer of parameter
// /a/b:weights of kind "adam_m" is the variable /optimizer/adam_m/a/b:weights.
const StateScope = "/optimizer"

// stateVariable returns the optimizer buffer of the given kind for parameter v, creating it with
// zeros in the accumulation dtype when it does not exist. Both step programs share it.
func stateVariable(ctx *context.Context, kind string, v *context.Variable) *context.Variable {
	scope := path.Join(StateScope, kind, v.Scope())
	dtype := accumulationDType(v.DType())
	zeros := tensors.FromShape(shapes.Make(dtype, v.Shape().Dimensions...))
	state := ctx.InAbsPath(scope).Checked(false).VariableWithValue(v.Name(), zeros)
	state.SetTrainable(false)
	return state
}

// baseUpdate is the input of one base optimizer update. All nodes are in the accumulation dtype.
type baseUpdate struct {
	vars         []*context.Variable
	weights      []*Node // w_t
	grads        []*Node // the gradient handed to the base optimizer: g, g_s or the reuse gradient
	learningRate *Node   // eta_t, scalar
	count        *Node   // t = step + 1, scalar, for bias correction
}

// applyBase returns the new weights w_{t+1} of the configured base optimizer.
func (o *Optimizer) applyBase(ctx *context.Context, u baseUpdate) []*Node {
	switch o.cfg.Base {
	case BaseSGD:
		return o.sgd(ctx, u)
	case BaseLAMB:
		return o.lamb(ctx, u)
	default:
		return o.adamW(ctx, u)
	}
}

// decays reports whether weight decay and LAMB's trust ratio apply to v.
func (o *Optimizer) decays(v *context.Variable) bool {
	return !slices.Contains(o.cfg.NoDecay, v.Name())
}

// sgd is SGD with momentum and L2 weight decay, in the form of PyTorch's SGD with dampening 0:
//
//	d_t   = g_t + lambda w_t
//	b_t   = mu b_{t-1} + d_t
//	w_t+1 = w_t - eta (d_t + mu b_t)   with Nesterov
//	w_t+1 = w_t - eta b_t              otherwise
//
// mu is Config.Momentum and lambda Config.WeightDecay. With mu = 0 no buffer is kept.
func (o *Optimizer) sgd(ctx *context.Context, u baseUpdate) []*Node {
	out := make([]*Node, len(u.vars))
	for i, v := range u.vars {
		w, d := u.weights[i], u.grads[i]
		if o.cfg.WeightDecay > 0 && o.decays(v) {
			d = Add(d, MulScalar(w, o.cfg.WeightDecay))
		}
		step := d
		if o.cfg.Momentum > 0 {
			buffer := stateVariable(ctx, "sgd_momentum", v)
			b := Add(MulScalar(buffer.ValueGraph(w.Graph()), o.cfg.Momentum), d)
			buffer.SetValueGraph(b)
			step = b
			if o.cfg.Nesterov {
				step = Add(d, MulScalar(b, o.cfg.Momentum))
			}
		}
		out[i] = Sub(w, Mul(u.learningRate, step))
	}
	return out
}

// adamDirection updates Adam's moments of parameter i and returns the bias-corrected direction
// m_hat / (sqrt(v_hat) + epsilon) (Kingma and Ba 2015, Algorithm 1):
//
//	m_t = beta1 m_{t-1} + (1 - beta1) g_t        m_hat = m_t / (1 - beta1^t)
//	v_t = beta2 v_{t-1} + (1 - beta2) g_t^2      v_hat = v_t / (1 - beta2^t)
func (o *Optimizer) adamDirection(ctx *context.Context, u baseUpdate, i int) *Node {
	v, g := u.vars[i], u.grads[i]
	graph := g.Graph()
	b1, b2 := o.cfg.Beta1, o.cfg.Beta2
	mVar, vVar := stateVariable(ctx, "adam_m", v), stateVariable(ctx, "adam_v", v)
	m := Add(MulScalar(mVar.ValueGraph(graph), b1), MulScalar(g, 1-b1))
	second := Add(MulScalar(vVar.ValueGraph(graph), b2), MulScalar(Square(g), 1-b2))
	mVar.SetValueGraph(m)
	vVar.SetValueGraph(second)

	one := ScalarOne(graph, g.DType())
	mHat := Div(m, Sub(one, Pow(Scalar(graph, g.DType(), b1), u.count)))
	vHat := Div(second, Sub(one, Pow(Scalar(graph, g.DType(), b2), u.count)))
	return Div(mHat, AddScalar(Sqrt(vHat), o.cfg.AdamEpsilon))
}

// adamW is Adam with decoupled weight decay (Loshchilov and Hutter 2019, Algorithm 2):
//
//	w_t+1 = w_t - eta (m_hat / (sqrt(v_hat) + epsilon) + lambda w_t)
//
// lambda is Config.WeightDecay, applied only to variables not in Config.NoDecay.
func (o *Optimizer) adamW(ctx *context.Context, u baseUpdate) []*Node {
	out := make([]*Node, len(u.vars))
	for i, v := range u.vars {
		w := u.weights[i]
		step := o.adamDirection(ctx, u, i)
		if o.cfg.WeightDecay > 0 && o.decays(v) {
			step = Add(step, MulScalar(w, o.cfg.WeightDecay))
		}
		out[i] = Sub(w, Mul(u.learningRate, step))
	}
	return out
}

// lamb is LAMB (You et al. 2020, Algorithm 2) with bias correction:
//
//	r_t   = m_hat / (sqrt(v_hat) + epsilon) + lambda w_t
//	phi   = |w_t| / |r_t|, or 1 when either norm is 0
//	w_t+1 = w_t - eta phi r_t
//
// Weight decay enters r_t before the trust ratio phi. Variables in Config.NoDecay get neither decay
// nor the trust ratio (phi = 1), as is usual for biases and normalisation parameters.
func (o *Optimizer) lamb(ctx *context.Context, u baseUpdate) []*Node {
	out := make([]*Node, len(u.vars))
	for i, v := range u.vars {
		w := u.weights[i]
		step := o.adamDirection(ctx, u, i)
		if o.decays(v) {
			if o.cfg.WeightDecay > 0 {
				step = Add(step, MulScalar(w, o.cfg.WeightDecay))
			}
			step = Mul(step, trustRatio(norm(w), norm(step)))
		}
		out[i] = Sub(w, Mul(u.learningRate, step))
	}
	return out
}

// trustRatio returns |w| / |r|, or 1 when either norm is zero, so that a zero-initialised tensor
// still moves and a zero update stays zero.
func trustRatio(weightNorm, updateNorm *Node) *Node {
	graph := weightNorm.Graph()
	zero := ScalarZero(graph, weightNorm.DType())
	one := ScalarOne(graph, weightNorm.DType())
	bothPositive := LogicalAnd(GreaterThan(weightNorm, zero), GreaterThan(updateNorm, zero))
	return Where(bothPositive, Div(weightNorm, Where(bothPositive, updateNorm, one)), one)
}
