package dotgrad

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/gomlx/gomlx/backends"
	_ "github.com/gomlx/gomlx/backends/simplego"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The tests and benchmarks of this package switch graph.VJPRegistration between the stock and the
// dotgrad VJPs, so none of them calls t.Parallel.

// newTestBackend returns a pure-Go backend with RecommendedGoBackendConfig, because the
// DotGeneral-based gradients can deadlock the default configuration.
func newTestBackend(t testing.TB) backends.Backend {
	t.Helper()
	backend, err := backends.NewWithConfig(RecommendedGoBackendConfig)
	require.NoError(t, err)
	t.Cleanup(backend.Finalize)
	return backend
}

// gradCase is a contraction whose gradients are checked. equation names the axes of lhs, rhs and
// the output of op with one letter each, as in Einsum, for the float64 reference.
type gradCase struct {
	name     string
	equation string
	lhsDims  []int
	rhsDims  []int
	op       func(lhs, rhs *graph.Node) *graph.Node
}

func einsumOp(equation string) func(lhs, rhs *graph.Node) *graph.Node {
	return func(lhs, rhs *graph.Node) *graph.Node { return graph.Einsum(equation, lhs, rhs) }
}

func dotGeneralOp(lhsContracting, lhsBatch, rhsContracting, rhsBatch []int) func(lhs, rhs *graph.Node) *graph.Node {
	return func(lhs, rhs *graph.Node) *graph.Node {
		return graph.DotGeneral(lhs, lhsContracting, lhsBatch, rhs, rhsContracting, rhsBatch)
	}
}

var gradCases = []gradCase{
	{"Dot vector by vector", "k,k->", []int{5}, []int{5}, graph.Dot},
	{"Dot matrix by vector", "ak,k->a", []int{4, 5}, []int{5}, graph.Dot},
	{"Dot matrix by matrix", "ak,kb->ab", []int{6, 5}, []int{5, 7}, graph.Dot},
	{"MatMul rank 3 by 2", "abk,kc->abc", []int{2, 3, 4}, []int{4, 5}, graph.MatMul},
	{"MatMul rank 4 by 4", "abck,abkd->abcd", []int{2, 3, 4, 5}, []int{2, 3, 5, 2}, graph.MatMul},
	{"Einsum dense rank 3", "bsd,df->bsf", []int{2, 3, 4}, []int{4, 5}, einsumOp("bsd,df->bsf")},
	{"Einsum attention logits", "bqhd,bkhd->bhqk", []int{2, 3, 2, 4}, []int{2, 5, 2, 4}, einsumOp("bqhd,bkhd->bhqk")},
	{"Einsum attention output", "bhqk,bkhd->bqhd", []int{2, 2, 3, 5}, []int{2, 5, 2, 4}, einsumOp("bhqk,bkhd->bqhd")},
	{"DotGeneral lhs contracting first", "ka,kb->ab", []int{5, 4}, []int{5, 3}, dotGeneralOp([]int{0}, nil, []int{0}, nil)},
	{"DotGeneral rhs contracting last", "ak,bk->ab", []int{4, 5}, []int{3, 5}, dotGeneralOp([]int{1}, nil, []int{1}, nil)},
	{"DotGeneral two contracting unsorted", "xay,xyb->ab", []int{2, 3, 4}, []int{2, 4, 5},
		dotGeneralOp([]int{2, 0}, nil, []int{1, 0}, nil)},
	{"DotGeneral batch axis in middle", "abk,kbc->bac", []int{3, 2, 4}, []int{4, 2, 5},
		dotGeneralOp([]int{2}, []int{1}, []int{0}, []int{1})},
	{"DotGeneral two batch reversed", "pqcx,qpxd->qpcd", []int{2, 3, 4, 5}, []int{3, 2, 5, 6},
		dotGeneralOp([]int{3}, []int{1, 0}, []int{2}, []int{0, 1})},
	{"DotGeneral negative axes", "abk,kc->abc", []int{2, 3, 4}, []int{4, 5},
		dotGeneralOp([]int{-1}, nil, []int{-2}, nil)},
	{"DotGeneral rank 1 by 4", "k,abkc->abc", []int{4}, []int{2, 3, 4, 5}, dotGeneralOp([]int{0}, nil, []int{2}, nil)},
	{"DotGeneral outer product", "a,b->ab", []int{3}, []int{4}, dotGeneralOp(nil, nil, nil, nil)},
	{"DotGeneral batched dot", "bk,bk->b", []int{3, 4}, []int{3, 4}, dotGeneralOp([]int{1}, []int{0}, []int{1}, []int{0})},
	{"DotGeneral batch only", "b,b->b", []int{3}, []int{3}, dotGeneralOp(nil, []int{0}, nil, []int{0})},
}

// randomValues returns n values drawn uniformly from [-1, 1).
func randomValues(rng *rand.Rand, n int) []float64 {
	values := make([]float64, n)
	for ii := range values {
		values[ii] = 2*rng.Float64() - 1
	}
	return values
}

func product(dims []int) int {
	size := 1
	for _, dim := range dims {
		size *= dim
	}
	return size
}

func toFloat32(values []float64) []float32 {
	converted := make([]float32, len(values))
	for ii, value := range values {
		converted[ii] = float32(value)
	}
	return converted
}

// parseEquation splits an equation such as "bsd,df->bsf" into its three axis lists.
func parseEquation(t testing.TB, equation string) (lhs, rhs, output string) {
	t.Helper()
	inputs, output, found := strings.Cut(equation, "->")
	require.True(t, found, "equation %q has no \"->\"", equation)
	lhs, rhs, found = strings.Cut(inputs, ",")
	require.True(t, found, "equation %q has no \",\"", equation)
	return lhs, rhs, output
}

// outputDims returns the output dimensions that equation gives for operands of these dimensions.
func outputDims(t testing.TB, equation string, lhsDims, rhsDims []int) []int {
	t.Helper()
	lhsAxes, rhsAxes, outputAxes := parseEquation(t, equation)
	dimOf := map[rune]int{}
	for ii, label := range lhsAxes {
		dimOf[label] = lhsDims[ii]
	}
	for ii, label := range rhsAxes {
		dimOf[label] = rhsDims[ii]
	}
	dims := make([]int, 0, len(outputAxes))
	for _, label := range outputAxes {
		dims = append(dims, dimOf[label])
	}
	return dims
}

// referenceGradients returns, in float64, the gradients of sum(v * out) with respect to lhs and
// rhs, where out[o] = sum of lhs[l] * rhs[r] over every assignment of the equation's axis labels
// consistent with o. It enumerates all assignments of all labels, so it works for any pair of
// small operands and shares no code with the package.
func referenceGradients(t testing.TB, equation string, lhsDims, rhsDims []int, lhs, rhs, v []float64) (lhsGrad, rhsGrad []float64) {
	t.Helper()
	lhsAxes, rhsAxes, outputAxes := parseEquation(t, equation)

	// Collect the labels and their dimensions.
	var labels []rune
	dimOf := map[rune]int{}
	addLabels := func(axes string, dims []int) {
		require.Len(t, dims, len([]rune(axes)), "equation %q: operand %q has dimensions %v", equation, axes, dims)
		for ii, label := range []rune(axes) {
			if previous, seen := dimOf[label]; seen {
				require.Equal(t, previous, dims[ii], "equation %q: label %q has two dimensions", equation, label)
				continue
			}
			labels = append(labels, label)
			dimOf[label] = dims[ii]
		}
	}
	addLabels(lhsAxes, lhsDims)
	addLabels(rhsAxes, rhsDims)

	// flatIndex returns the row-major index into a tensor whose axes are named by axes.
	assignment := map[rune]int{}
	flatIndex := func(axes string) int {
		index := 0
		for _, label := range axes {
			index = index*dimOf[label] + assignment[label]
		}
		return index
	}

	lhsGrad = make([]float64, len(lhs))
	rhsGrad = make([]float64, len(rhs))
	numAssignments := 1
	for _, label := range labels {
		numAssignments *= dimOf[label]
	}
	for counter := range numAssignments {
		remainder := counter
		for ii := len(labels) - 1; ii >= 0; ii-- {
			assignment[labels[ii]] = remainder % dimOf[labels[ii]]
			remainder /= dimOf[labels[ii]]
		}
		lhsIndex, rhsIndex, outputIndex := flatIndex(lhsAxes), flatIndex(rhsAxes), flatIndex(outputAxes)
		lhsGrad[lhsIndex] += v[outputIndex] * rhs[rhsIndex]
		rhsGrad[rhsIndex] += v[outputIndex] * lhs[lhsIndex]
	}
	return lhsGrad, rhsGrad
}

// graphGradients runs op on lhs and rhs and returns the gradients of sum(v * op(lhs, rhs)) with
// respect to lhs and rhs, using the VJPs registered when it is called.
func graphGradients(t testing.TB, backend backends.Backend, op func(lhs, rhs *graph.Node) *graph.Node,
	lhs, rhs, v *tensors.Tensor) (lhsGrad, rhsGrad *tensors.Tensor) {
	t.Helper()
	outputs := graph.MustExecOnceN(backend, func(lhs, rhs, v *graph.Node) (*graph.Node, *graph.Node) {
		output := op(lhs, rhs)
		if !output.Shape().Equal(v.Shape()) {
			panic(fmt.Errorf("op output has shape %s, expected %s from the equation", output.Shape(), v.Shape()))
		}
		loss := graph.ReduceAllSum(graph.Mul(output, v))
		grads := graph.Gradient(loss, lhs, rhs)
		return grads[0], grads[1]
	}, lhs, rhs, v)
	return outputs[0], outputs[1]
}

// assertClose checks that got and want have the same length and that each element of got is
// within atol + rtol*|want| of want.
func assertClose[T float32 | float64](t *testing.T, name string, got []T, want []float64, atol, rtol float64) {
	t.Helper()
	if !assert.Len(t, got, len(want), "%s: got %d values, want %d", name, len(got), len(want)) {
		return
	}
	for ii := range want {
		diff := math.Abs(float64(got[ii]) - want[ii])
		if diff > atol+rtol*math.Abs(want[ii]) {
			assert.Failf(t, "values differ", "%s[%d]: got %g, want %g (difference %g)", name, ii, got[ii], want[ii], diff)
			return
		}
	}
}

func float32Values(t *testing.T, tensor *tensors.Tensor) []float32 {
	t.Helper()
	require.Equal(t, dtypes.Float32, tensor.DType(), "tensor shape %s", tensor.Shape())
	return tensors.MustCopyFlatData[float32](tensor)
}

func float64Values(values []float32) []float64 {
	converted := make([]float64, len(values))
	for ii, value := range values {
		converted[ii] = float64(value)
	}
	return converted
}

func TestGradientsMatchStockAndReference(t *testing.T) {
	backend := newTestBackend(t)
	t.Cleanup(Install)
	const atol, rtol = 1e-5, 1e-5

	for _, tc := range gradCases {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(len(tc.name))))
			vDims := outputDims(t, tc.equation, tc.lhsDims, tc.rhsDims)
			lhs := randomValues(rng, product(tc.lhsDims))
			rhs := randomValues(rng, product(tc.rhsDims))
			v := randomValues(rng, product(vDims))
			lhsTensor := tensors.FromFlatDataAndDimensions(toFloat32(lhs), tc.lhsDims...)
			rhsTensor := tensors.FromFlatDataAndDimensions(toFloat32(rhs), tc.rhsDims...)
			vTensor := tensors.FromFlatDataAndDimensions(toFloat32(v), vDims...)

			// The reference takes the float32-rounded inputs, so only the arithmetic differs.
			wantLhs, wantRhs := referenceGradients(t, tc.equation, tc.lhsDims, tc.rhsDims,
				float64Values(toFloat32(lhs)), float64Values(toFloat32(rhs)), float64Values(toFloat32(v)))

			restoreStock()
			stockLhs, stockRhs := graphGradients(t, backend, tc.op, lhsTensor, rhsTensor, vTensor)
			Install()
			gotLhs, gotRhs := graphGradients(t, backend, tc.op, lhsTensor, rhsTensor, vTensor)

			assert.Equal(t, lhsTensor.Shape(), gotLhs.Shape(), "lhs gradient shape")
			assert.Equal(t, rhsTensor.Shape(), gotRhs.Shape(), "rhs gradient shape")
			assertClose(t, "stock lhs gradient", float32Values(t, stockLhs), wantLhs, atol, rtol)
			assertClose(t, "stock rhs gradient", float32Values(t, stockRhs), wantRhs, atol, rtol)
			assertClose(t, "lhs gradient vs reference", float32Values(t, gotLhs), wantLhs, atol, rtol)
			assertClose(t, "rhs gradient vs reference", float32Values(t, gotRhs), wantRhs, atol, rtol)
			assertClose(t, "lhs gradient vs stock", float32Values(t, gotLhs), float64Values(float32Values(t, stockLhs)), atol, rtol)
			assertClose(t, "rhs gradient vs stock", float32Values(t, gotRhs), float64Values(float32Values(t, stockRhs)), atol, rtol)
		})
	}
}

func TestGradientsKeepFloat64(t *testing.T) {
	backend := newTestBackend(t)
	Install()
	for _, tc := range []gradCase{gradCases[2], gradCases[6], gradCases[10]} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(2, uint64(len(tc.name))))
			vDims := outputDims(t, tc.equation, tc.lhsDims, tc.rhsDims)
			lhs := randomValues(rng, product(tc.lhsDims))
			rhs := randomValues(rng, product(tc.rhsDims))
			v := randomValues(rng, product(vDims))
			wantLhs, wantRhs := referenceGradients(t, tc.equation, tc.lhsDims, tc.rhsDims, lhs, rhs, v)

			gotLhs, gotRhs := graphGradients(t, backend, tc.op,
				tensors.FromFlatDataAndDimensions(lhs, tc.lhsDims...),
				tensors.FromFlatDataAndDimensions(rhs, tc.rhsDims...),
				tensors.FromFlatDataAndDimensions(v, vDims...))

			require.Equal(t, dtypes.Float64, gotLhs.DType(), "lhs gradient dtype")
			require.Equal(t, dtypes.Float64, gotRhs.DType(), "rhs gradient dtype")
			assertClose(t, "lhs gradient", tensors.MustCopyFlatData[float64](gotLhs), wantLhs, 1e-12, 1e-12)
			assertClose(t, "rhs gradient", tensors.MustCopyFlatData[float64](gotRhs), wantRhs, 1e-12, 1e-12)
		})
	}
}

func TestDotGeneralAxesReadsNode(t *testing.T) {
	backend := newTestBackend(t)
	g := graph.NewGraph(backend, t.Name())
	lhs := graph.Parameter(g, "lhs", shapes.Make(dtypes.Float32, 2, 3, 4, 5))
	rhs := graph.Parameter(g, "rhs", shapes.Make(dtypes.Float32, 3, 2, 5, 6))
	node := graph.DotGeneral(lhs, []int{-1}, []int{1, 0}, rhs, []int{2}, []int{0, 1})

	got := dotGeneralAxes(node)

	want := contraction{
		lhsContracting: []int{3},
		lhsBatch:       []int{1, 0},
		rhsContracting: []int{2},
		rhsBatch:       []int{0, 1},
	}
	assert.Equal(t, want, got, "axes of %s", node)
}

// largestNode returns the size of the largest node in g.
func largestNode(g *graph.Graph) (size int, description string) {
	for _, node := range g.Nodes() {
		if node.NumOutputs() == 1 && node.Shape().Size() > size {
			size, description = node.Shape().Size(), node.String()
		}
	}
	return size, description
}

// TestDenseGradientAllocatesNoCube builds the two forms layers.Dense uses, Dot for inputs of rank
// 2 and Einsum "bsd,df->bsf" for rank 3, and checks the largest tensor in the gradient graph.
func TestDenseGradientAllocatesNoCube(t *testing.T) {
	backend := newTestBackend(t)
	t.Cleanup(Install)
	const rows, in, out = 64, 16, 32

	for _, tc := range []struct {
		name    string
		install func()
		wantMax int
	}{
		{"stock", restoreStock, rows * in * out},
		{"installed", Install, rows * out},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.install()
			for _, op := range []struct {
				name string
				fn   func(x, w *graph.Node) *graph.Node
			}{
				{"Dot", graph.Dot},
				{"Einsum", func(x, w *graph.Node) *graph.Node {
					x = graph.Reshape(x, 4, rows/4, in)
					return graph.Einsum("bsd,df->bsf", x, w)
				}},
			} {
				g := graph.NewGraph(backend, t.Name()+op.name)
				x := graph.Parameter(g, "x", shapes.Make(dtypes.Float32, rows, in))
				w := graph.Parameter(g, "w", shapes.Make(dtypes.Float32, in, out))
				loss := graph.ReduceAllSum(op.fn(x, w))
				_ = graph.Gradient(loss, x, w)

				size, node := largestNode(g)
				assert.Equal(t, tc.wantMax, size, "%s: largest node %s", op.name, node)
				g.Finalize()
			}
		})
	}
}

func TestInstallConcurrentAndRepeated(t *testing.T) {
	t.Cleanup(Install)
	restoreStock()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(Install)
	}
	wg.Wait()
	Install()

	for _, nodeType := range []graph.NodeType{graph.NodeTypeDot, graph.NodeTypeDotGeneral} {
		assert.NotNil(t, graph.VJPRegistration[nodeType], "VJP of %s", nodeType)
	}
	backend := newTestBackend(t)
	g := graph.NewGraph(backend, t.Name())
	x := graph.Parameter(g, "x", shapes.Make(dtypes.Float32, 8, 4))
	w := graph.Parameter(g, "w", shapes.Make(dtypes.Float32, 4, 3))
	_ = graph.Gradient(graph.ReduceAllSum(graph.Dot(x, w)), x, w)
	size, node := largestNode(g)
	assert.Equal(t, 8*4, size, "largest node %s after Install", node)
}
