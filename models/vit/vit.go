package vit

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:staticcheck // GoMLX graph code reads best with the ops unqualified.
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/ml/context"
)

// Model is a Vision Transformer with a fixed configuration and initialisation seed.
//
// Its variables live in the context scope given to Logits. Every variable is initialised on the
// host from a generator seeded by (Seed, scope and name), so the initial weights depend neither on
// the backend nor on the order in which variables are created.
type Model struct {
	Config Config
	Seed   uint64
}

// New returns a Model after validating the configuration.
func New(cfg Config, seed uint64) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Model{Config: cfg, Seed: seed}, nil
}

// Logits builds the forward pass from images [batch, ImageSize, ImageSize, Channels] to logits
// [batch, Classes].
//
// When training is true and Dropout > 0, dropout masks are drawn from rngState (a GoMLX RNG state
// node) and the advanced state is returned; otherwise rngState is returned unchanged and may be nil.
// Calling Logits twice with the same rngState draws the same masks, which is what a SAM step needs
// for its two passes over one batch.
func (m *Model) Logits(ctx *context.Context, images *Node, training bool, rngState *Node) (logits, newRNGState *Node) {
	c := m.Config
	batch := images.Shape().Dimensions[0]
	images.AssertDims(batch, c.ImageSize, c.ImageSize, c.Channels)
	drop := &dropout{rate: c.Dropout, active: training && c.Dropout > 0, state: rngState}

	// Patch embedding.
	x := patchify(images, c.PatchSize) // [batch, patches, patch*patch*channels]
	x = m.dense(ctx.In("patch_embedding"), x, c.Hidden)
	x.AssertDims(batch, c.NumPatches(), c.Hidden)

	// Class token and position embedding.
	if c.Pool == PoolClassToken {
		cls := m.param(ctx, x.Graph(), "cls_token", zerosInit, x.DType(), 1, 1, c.Hidden)
		cls = BroadcastToDims(cls, batch, 1, c.Hidden)
		x = Concatenate([]*Node{cls, x}, 1)
	}
	pos := m.param(ctx, x.Graph(), "pos_embedding", normalInit(0.02), x.DType(), 1, c.NumTokens(), c.Hidden)
	x = Add(x, pos)
	x = drop.apply(x)
	x.AssertDims(batch, c.NumTokens(), c.Hidden)

	// Encoder blocks.
	for i := range c.Depth {
		x = m.block(ctx.Inf("block_%02d", i), x, drop)
	}
	x = m.layerNorm(ctx.In("final_norm"), x)
	x.AssertDims(batch, c.NumTokens(), c.Hidden)

	// Pooling and classifier head.
	var pooled *Node
	if c.Pool == PoolClassToken {
		// Reading token 0 with a one-hot contraction keeps the graph free of Slice, whose gradient
		// the pure-Go backend lacks.
		first := OneHot(Const(x.Graph(), []int32{0}), c.NumTokens(), x.DType()) // [1, tokens]
		pooled = Einsum("bth,ot->boh", x, first)
		pooled = Reshape(pooled, batch, c.Hidden)
	} else {
		pooled = ReduceMean(x, 1)
	}
	pooled.AssertDims(batch, c.Hidden)
	logits = m.denseWith(ctx.In("head"), pooled, c.Classes, zerosInit)
	logits.AssertDims(batch, c.Classes)
	return logits, drop.state
}

// patchify cuts images [batch, H, W, C] into non-overlapping patches [batch, (H/p)*(W/p), p*p*C],
// in row-major patch order, each patch flattened in (row, column, channel) order.
func patchify(images *Node, p int) *Node {
	dims := images.Shape().Dimensions
	batch, height, width, channels := dims[0], dims[1], dims[2], dims[3]
	rows, cols := height/p, width/p
	x := Reshape(images, batch, rows, p, cols, p, channels)
	x = TransposeAllDims(x, 0, 1, 3, 2, 4, 5) // [batch, rows, cols, p, p, channels]
	return Reshape(x, batch, rows*cols, p*p*channels)
}

// block is one pre-norm encoder block: x + MHA(LN(x)), then x + MLP(LN(x)).
func (m *Model) block(ctx *context.Context, x *Node, drop *dropout) *Node {
	c := m.Config
	dims := x.Shape().Dimensions
	batch, tokens := dims[0], dims[1]

	// Multi-head self-attention.
	y := m.layerNorm(ctx.In("attention_norm"), x)
	y = m.attention(ctx.In("attention"), y)
	y = drop.apply(y)
	x = Add(x, y)

	// MLP with GELU.
	y = m.layerNorm(ctx.In("mlp_norm"), x)
	y = m.dense(ctx.In("mlp_in"), y, c.MLPSize)
	y = gelu(y)
	y = drop.apply(y)
	y = m.dense(ctx.In("mlp_out"), y, c.Hidden)
	y = drop.apply(y)
	x = Add(x, y)
	x.AssertDims(batch, tokens, c.Hidden)
	return x
}

// attention is multi-head scaled dot-product self-attention over x [batch, tokens, hidden].
func (m *Model) attention(ctx *context.Context, x *Node) *Node {
	c := m.Config
	dims := x.Shape().Dimensions
	batch, tokens := dims[0], dims[1]
	headDim := c.Hidden / c.Heads

	split := func(name string) *Node {
		y := m.dense(ctx.In(name), x, c.Hidden)
		return Reshape(y, batch, tokens, c.Heads, headDim) // [batch, tokens, heads, headDim]
	}
	q, k, v := split("query"), split("key"), split("value")
	scores := Einsum("bqhd,bkhd->bhqk", q, k) // [batch, heads, tokens, tokens]
	scores = MulScalar(scores, 1/math.Sqrt(float64(headDim)))
	weights := Softmax(scores, -1)
	out := Einsum("bhqk,bkhd->bqhd", weights, v) // [batch, tokens, heads, headDim]
	out = Reshape(out, batch, tokens, c.Hidden)
	out = m.dense(ctx.In("output"), out, c.Hidden)
	out.AssertDims(batch, tokens, c.Hidden)
	return out
}

// layerNorm normalises the last axis to zero mean and unit variance, then applies a learned scale
// and offset.
func (m *Model) layerNorm(ctx *context.Context, x *Node) *Node {
	hidden := x.Shape().Dimensions[x.Rank()-1]
	mean := ReduceAndKeep(x, ReduceMean, -1)
	centered := Sub(x, mean)
	variance := ReduceAndKeep(Square(centered), ReduceMean, -1)
	normed := Div(centered, Sqrt(AddScalar(variance, m.Config.LayerNormEpsilon)))
	scale := m.param(ctx, x.Graph(), "scale", onesInit, x.DType(), hidden)
	offset := m.param(ctx, x.Graph(), "offset", zerosInit, x.DType(), hidden)
	return Add(Mul(normed, ExpandLeftToRank(scale, x.Rank())), ExpandLeftToRank(offset, x.Rank()))
}

// dense is an affine map over the last axis with Xavier-uniform weights and zero bias.
func (m *Model) dense(ctx *context.Context, x *Node, out int) *Node {
	return m.denseWith(ctx, x, out, xavierInit)
}

// denseWith is dense with the given weight initialiser.
func (m *Model) denseWith(ctx *context.Context, x *Node, out int, weightInit initFn) *Node {
	in := x.Shape().Dimensions[x.Rank()-1]
	w := m.param(ctx, x.Graph(), "weights", weightInit, x.DType(), in, out)
	b := m.param(ctx, x.Graph(), "bias", zerosInit, x.DType(), out)
	// Contract the last axis of x with the first of w; DotGeneral keeps x's leading axes.
	y := DotGeneral(x, []int{x.Rank() - 1}, nil, w, []int{0}, nil)
	return Add(y, ExpandLeftToRank(b, y.Rank()))
}

// gelu is the exact Gaussian error linear unit, x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)).
func gelu(x *Node) *Node {
	return Mul(MulScalar(x, 0.5), OnePlus(Erf(MulScalar(x, 1/math.Sqrt2))))
}

// dropout applies inverted dropout with masks drawn from a threaded RNG state.
type dropout struct {
	rate   float64
	active bool
	state  *Node
}

func (d *dropout) apply(x *Node) *Node {
	if !d.active {
		return x
	}
	if d.state == nil {
		panic("vit: dropout is active but no RNG state was given to Logits")
	}
	var u *Node
	d.state, u = RandomUniform(d.state, x.Shape())
	keep := GreaterOrEqual(u, Scalar(x.Graph(), x.DType(), d.rate))
	return Where(keep, MulScalar(x, 1/(1-d.rate)), ZerosLike(x))
}

// initFn fills a tensor of the given dimensions from rng.
type initFn func(rng *rand.Rand, dims []int) []float64

func zerosInit(_ *rand.Rand, dims []int) []float64 {
	return make([]float64, shapes.Make(dtypes.Float64, dims...).Size())
}

func onesInit(_ *rand.Rand, dims []int) []float64 {
	values := make([]float64, shapes.Make(dtypes.Float64, dims...).Size())
	for i := range values {
		values[i] = 1
	}
	return values
}

// xavierInit draws weights [in, out] from U(-a, a) with a = sqrt(6 / (in + out)) (Glorot and Bengio
// 2010).
func xavierInit(rng *rand.Rand, dims []int) []float64 {
	in, out := dims[0], dims[1]
	limit := math.Sqrt(6 / float64(in+out))
	values := make([]float64, in*out)
	for i := range values {
		values[i] = (2*rng.Float64() - 1) * limit
	}
	return values
}

// normalInit draws from N(0, stddev^2), truncated at two standard deviations.
func normalInit(stddev float64) initFn {
	return func(rng *rand.Rand, dims []int) []float64 {
		values := make([]float64, shapes.Make(dtypes.Float64, dims...).Size())
		for i := range values {
			v := rng.NormFloat64()
			for math.Abs(v) > 2 {
				v = rng.NormFloat64()
			}
			values[i] = v * stddev
		}
		return values
	}
}

// param returns the variable name in ctx's scope, creating it with values from init when it does
// not exist yet. The generator is seeded from the model seed and the variable's full path.
func (m *Model) param(ctx *context.Context, g *Graph, name string, init initFn, dtype dtypes.DType, dims ...int) *Node {
	path := ctx.Scope() + "/" + name
	h := fnv.New64a()
	_, _ = h.Write([]byte(path))
	rng := rand.New(rand.NewPCG(m.Seed, h.Sum64()))
	initializer := func(g *Graph, shape shapes.Shape) *Node {
		if !slices.Equal(shape.Dimensions, dims) {
			panic(fmt.Sprintf("vit: variable %s: initialiser asked for shape %s, want dimensions %v", path, shape, dims))
		}
		values := init(rng, dims)
		return ConvertDType(Reshape(Const(g, values), dims...), shape.DType)
	}
	v := ctx.WithInitializer(initializer).VariableWithShape(name, shapes.Make(dtype, dims...))
	return v.ValueGraph(g)
}
