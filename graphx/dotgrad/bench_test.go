package dotgrad

import (
	"flag"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/layers/activations"
	"github.com/stretchr/testify/require"
)

var vitConfigs = flag.String("vit_configs", "go:parallelism=-1;go:ops_sequential",
	"semicolon-separated pure-Go backend configurations for BenchmarkViTGrad. The default \"go\" "+
		"deadlocks with the dotgrad VJPs, and -timeout does not stop benchmarks, so run it under timeout -s QUIT")

// vjpVariants are the two gradient implementations the benchmarks compare.
var vjpVariants = []struct {
	name    string
	install func()
}{
	{"stock", restoreStock},
	{"dotgrad", Install},
}

// randomTensor returns a float32 tensor of normal values with standard deviation 0.1.
func randomTensor(rng *rand.Rand, dims ...int) *tensors.Tensor {
	values := make([]float32, product(dims))
	for ii := range values {
		values[ii] = float32(0.1 * rng.NormFloat64())
	}
	return tensors.FromFlatDataAndDimensions(values, dims...)
}

// benchmarkGradients times one execution of graphFn per iteration, after a first call that
// compiles it. The VJPs registered when benchmarkGradients is called are the ones used.
func benchmarkGradients(b *testing.B, backend backends.Backend, graphFn func([]*graph.Node) []*graph.Node, inputs []any) {
	exec, err := graph.NewExec(backend, graphFn)
	require.NoError(b, err)
	defer exec.Finalize()
	runOnce := func() {
		outputs, err := exec.Exec(inputs...)
		require.NoError(b, err)
		for _, output := range outputs {
			output.MustFinalizeAll()
		}
	}

	// The first call builds the graph, with its gradient, and compiles it.
	runOnce()
	b.ResetTimer()
	for b.Loop() {
		runOnce()
	}
}

// BenchmarkDenseGrad times the forward and backward pass of one dense layer, x [6400, 64] times
// w [64, 256] (the MLP of a ViT with batch 128, 50 tokens, hidden 64), with GoMLX's VJPs ("stock")
// and with this package's ("dotgrad"). "Dot" uses graph.Dot, as layers.Dense does for inputs of
// rank 2, and "Einsum" feeds x as [128, 50, 64], as layers.Dense does for inputs of rank 3.
func BenchmarkDenseGrad(b *testing.B) {
	backend := newTestBackend(b)
	b.Cleanup(Install)
	rng := rand.New(rand.NewPCG(1, 1))
	inputs := []any{randomTensor(rng, 6400, 64), randomTensor(rng, 64, 256)}
	ops := []struct {
		name string
		fn   func(x, w *graph.Node) *graph.Node
	}{
		{"Dot", graph.Dot},
		{"Einsum", func(x, w *graph.Node) *graph.Node {
			return graph.Einsum("bsd,df->bsf", graph.Reshape(x, 128, 50, 64), w)
		}},
	}

	for _, op := range ops {
		for _, variant := range vjpVariants {
			b.Run(op.name+"/"+variant.name, func(b *testing.B) {
				variant.install()
				benchmarkGradients(b, backend, func(params []*graph.Node) []*graph.Node {
					x, w := params[0], params[1]
					loss := graph.ReduceAllMean(graph.Square(op.fn(x, w)))
					return graph.Gradient(loss, x, w)
				}, inputs)
			})
		}
	}
}

// vitGradients returns a graph function computing the gradients of a ViT-shaped encoder of the
// given depth (batch 128, 50 tokens, hidden 64, 4 heads, MLP 256, Gelu, no normalization) with
// respect to its weights. Its inputs are the tokens [128, 50, 64] followed by six weights per block.
func vitGradients(depth int) func(params []*graph.Node) []*graph.Node {
	const batch, tokens, hidden, heads = 128, 50, 64, 4
	return func(params []*graph.Node) []*graph.Node {
		x := params[0]
		weights := params[1:]
		for block := range depth {
			w := weights[6*block : 6*block+6]
			query := graph.Reshape(graph.Einsum("bsd,df->bsf", x, w[0]), batch, tokens, heads, hidden/heads)
			key := graph.Reshape(graph.Einsum("bsd,df->bsf", x, w[1]), batch, tokens, heads, hidden/heads)
			value := graph.Reshape(graph.Einsum("bsd,df->bsf", x, w[2]), batch, tokens, heads, hidden/heads)
			logits := graph.MulScalar(graph.Einsum("bqhd,bkhd->bhqk", query, key), 0.25) // [batch, heads, tokens, tokens]
			attention := graph.Softmax(logits, -1)
			mixed := graph.Reshape(graph.Einsum("bhqk,bkhd->bqhd", attention, value), batch, tokens, hidden)
			x = graph.Add(x, graph.Einsum("bsd,df->bsf", mixed, w[3]))
			mlp := activations.Gelu(graph.Einsum("bsd,df->bsf", x, w[4])) // [batch, tokens, 256]
			x = graph.Add(x, graph.Einsum("bsf,fd->bsd", mlp, w[5]))
		}
		loss := graph.ReduceAllMean(graph.Square(x))
		return graph.Gradient(loss, weights...)
	}
}

// BenchmarkViTGrad times the gradients of a 4-block ViT-shaped encoder (see vitGradients) for each
// backend configuration in -vit_configs, with the stock and the dotgrad VJPs. Select one VJP with
// -bench 'ViTGrad/dotgrad'.
func BenchmarkViTGrad(b *testing.B) {
	const depth = 4
	b.Cleanup(Install)

	// Each backend gets its own tensors, since a tensor keeps a buffer on the last backend that
	// used it and is invalid once that backend is finalized.
	newInputs := func() []any {
		rng := rand.New(rand.NewPCG(1, 2))
		inputs := []any{randomTensor(rng, 128, 50, 64)}
		for range depth {
			inputs = append(inputs, randomTensor(rng, 64, 64), randomTensor(rng, 64, 64), randomTensor(rng, 64, 64),
				randomTensor(rng, 64, 64), randomTensor(rng, 64, 256), randomTensor(rng, 256, 64))
		}
		return inputs
	}

	for _, variant := range vjpVariants {
		for _, config := range strings.Split(*vitConfigs, ";") {
			b.Run(variant.name+"/"+config, func(b *testing.B) {
				backend, err := backends.NewWithConfig(config)
				require.NoError(b, err, "backend configuration %q", config)
				defer backend.Finalize()
				variant.install()
				benchmarkGradients(b, backend, vitGradients(depth), newInputs())
			})
		}
	}
}
