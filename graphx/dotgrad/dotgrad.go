// Package dotgrad replaces the gradients (VJPs) of GoMLX's Dot and DotGeneral nodes with ones built
// from DotGeneral, the transpose rule of a contraction.
//
// In GoMLX v0.26.0 the VJP of DotGeneral (pkg/core/graph/ops_helpers.go) multiplies the incoming
// gradient by the broadcast other operand and then sums, and the VJP of Dot does the same. For a
// dense layer [rows, in] x [in, out] that materialises a [rows, in, out] tensor for each operand:
// 6400 x 64 x 256 float32 values are 420 MB for one layer of a small ViT with batch 128. Written as
// contractions, the gradients are
//
//	dL/dlhs = DotGeneral(dOut, rhs), contracting dOut's rhs-cross axes with rhs's cross axes,
//	dL/drhs = DotGeneral(lhs, dOut), contracting lhs's cross axes with dOut's lhs-cross axes,
//
// with the batch axes kept, then transposed back to the operand's axis order. They create no tensor
// larger than the operands and the output. With RecommendedGoBackendConfig, on a 2-core Intel Xeon
// shared with other jobs, BenchmarkDenseGrad ran the forward and backward pass of that dense layer
// in 0.20-0.22 s instead of 1.9-2.2 s, about 10 times faster. BenchmarkViTGrad (4 blocks, hidden
// 64, 4 heads, MLP 256, batch 128, 50 tokens) took 4.2-10.2 s a step, with a median of 7.0 s over
// 12 runs and at most 0.44 GB peak RSS. One run with the stock VJPs took 29.5 s and 1.56 GB.
//
// graph.Einsum, graph.EinsumAxes, graph.DotGeneral and graph.MatMul with an operand of rank 3 or
// more build DotGeneral nodes. graph.Dot, and graph.MatMul with both ranks at most 2, build Dot
// nodes, which have their own VJP entry. layers.Dense uses Dot for inputs of rank 2 or less and
// Einsum otherwise, and layers.MultiHeadAttention uses Einsum. Install replaces both entries.
//
// GoMLX v0.28.0 builds the DotGeneral VJP with DotGeneral itself and lowers Dot to DotGeneral, so
// this package can be dropped once the project moves to v0.28.0 or later.
//
// The DotGeneral calls in these gradients run concurrently in the pure-Go backend, which can
// deadlock at its default parallelism: see RecommendedGoBackendConfig.
package dotgrad

import (
	"fmt"
	"reflect"
	"slices"
	"sync"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
)

var (
	// registryMu serializes Install and restoreStock, which write graph.VJPRegistration.
	registryMu sync.Mutex

	// stockVJPs are GoMLX's own entries, read when this package is initialized, before any
	// Install can have replaced them.
	stockVJPs = map[graph.NodeType]graph.VJP{
		graph.NodeTypeDot:        graph.VJPRegistration[graph.NodeTypeDot],
		graph.NodeTypeDotGeneral: graph.VJPRegistration[graph.NodeTypeDotGeneral],
	}
)

// Install replaces the VJPs of Dot and DotGeneral nodes in graph.VJPRegistration with the
// DotGeneral-based ones of this package. Calling it again changes nothing, and concurrent calls are
// safe with each other.
//
// graph.Gradient reads graph.VJPRegistration without a lock, so call Install before any goroutine
// builds a gradient, for instance at the start of main or in TestMain. Gradients already built keep
// the VJP they were built with.
func Install() {
	registryMu.Lock()
	defer registryMu.Unlock()
	graph.VJPRegistration[graph.NodeTypeDot] = singleOutput(dotVJP)
	graph.VJPRegistration[graph.NodeTypeDotGeneral] = singleOutput(dotGeneralVJP)
}

// restoreStock puts GoMLX's own Dot and DotGeneral VJPs back, so tests and benchmarks can compare
// the two. Install replaces them again.
func restoreStock() {
	registryMu.Lock()
	defer registryMu.Unlock()
	for nodeType, vjp := range stockVJPs {
		graph.VJPRegistration[nodeType] = vjp
	}
}

// singleOutput adapts a VJP of a node with one output to graph.VJP.
func singleOutput(vjp func(node, v *graph.Node) []*graph.Node) graph.VJP {
	return func(node *graph.Node, vjpOutputs []*graph.Node, _ shapes.Shape) []*graph.Node {
		return vjp(node, vjpOutputs[0])
	}
}

// contraction is the axis configuration of a DotGeneral: the non-negative contracting and batch
// axes of each operand, where lhsContracting[i] pairs with rhsContracting[i], and likewise for batch.
type contraction struct {
	lhsContracting, lhsBatch []int
	rhsContracting, rhsBatch []int
}

// dotVJP returns the gradients of a Dot node. Dot accepts ranks (1, 1), (2, 1) and (2, 2) and
// contracts the last axis of lhs with the first axis of rhs.
func dotVJP(node, v *graph.Node) []*graph.Node {
	lhs, rhs := node.Inputs()[0], node.Inputs()[1]
	axes := contraction{
		lhsContracting: []int{lhs.Rank() - 1},
		rhsContracting: []int{0},
	}
	return contractionVJP(lhs, rhs, axes, v)
}

// dotGeneralVJP returns the gradients of a DotGeneral node.
func dotGeneralVJP(node, v *graph.Node) []*graph.Node {
	lhs, rhs := node.Inputs()[0], node.Inputs()[1]
	return contractionVJP(lhs, rhs, dotGeneralAxes(node), v)
}

// dotGeneralAxes reads the contracting and batch axes of a DotGeneral node.
//
// GoMLX v0.26.0 keeps them only in the unexported field Node.inputs, which for a DotGeneral node
// holds a *graph.nodeInputsDotGeneral with the []int fields lhsContractingAxes, lhsBatchAxes,
// rhsContractingAxes and rhsBatchAxes, already made non-negative by graph.DotGeneral. Neither type
// has an accessor for them, and Node.String prints them only as text. Package reflect may read
// unexported fields through Len, Index and Int (only Interface and the setters panic on them), so
// this reads them without unsafe and without changing the node. If a GoMLX release renames the
// fields, it panics with the names it looked for.
func dotGeneralAxes(node *graph.Node) contraction {
	if node.Type() != graph.NodeTypeDotGeneral {
		panic(fmt.Errorf("dotgrad: node %s has type %s, expected %s", node, node.Type(), graph.NodeTypeDotGeneral))
	}
	params := reflect.ValueOf(node).Elem().FieldByName("inputs")
	if params.Kind() == reflect.Interface {
		params = params.Elem()
	}
	if params.Kind() == reflect.Pointer {
		params = params.Elem()
	}
	if params.Kind() != reflect.Struct {
		panic(fmt.Errorf("dotgrad: cannot read the axes of DotGeneral node %s: graph.Node.inputs is not a pointer "+
			"to a struct in this GoMLX version; the package was written for GoMLX v0.26.0", node))
	}

	readAxes := func(fieldName string, rank int) []int {
		field := params.FieldByName(fieldName)
		if field.Kind() != reflect.Slice || field.Type().Elem().Kind() != reflect.Int {
			panic(fmt.Errorf("dotgrad: cannot read the axes of DotGeneral node %s: field %s.%s is missing or not "+
				"an []int in this GoMLX version; the package was written for GoMLX v0.26.0",
				node, params.Type(), fieldName))
		}
		axes := make([]int, field.Len())
		for ii := range axes {
			axes[ii] = int(field.Index(ii).Int())
			if axes[ii] < 0 || axes[ii] >= rank {
				panic(fmt.Errorf("dotgrad: DotGeneral node %s has %s=%v, out of range for an operand of rank %d",
					node, fieldName, axes, rank))
			}
		}
		return axes
	}

	lhsRank, rhsRank := node.Inputs()[0].Rank(), node.Inputs()[1].Rank()
	return contraction{
		lhsContracting: readAxes("lhsContractingAxes", lhsRank),
		lhsBatch:       readAxes("lhsBatchAxes", lhsRank),
		rhsContracting: readAxes("rhsContractingAxes", rhsRank),
		rhsBatch:       readAxes("rhsBatchAxes", rhsRank),
	}
}

// contractionVJP returns the gradients with respect to lhs and rhs of DotGeneral(lhs, rhs) with
// the given axes, where v is the gradient with respect to its output.
//
// The output axes are [batch..., lhs cross..., rhs cross...], where the cross axes of an operand
// are those neither contracted nor batch, in increasing order. Each gradient contracts v with the
// other operand over that operand's cross axes. DotGeneral then returns the other operand's
// remaining axes, its contracting ones, in increasing order, so the result is transposed back to
// the operand's own axis order.
func contractionVJP(lhs, rhs *graph.Node, axes contraction, v *graph.Node) []*graph.Node {
	lhsCross := crossAxes(lhs.Rank(), axes.lhsContracting, axes.lhsBatch)
	rhsCross := crossAxes(rhs.Rank(), axes.rhsContracting, axes.rhsBatch)
	numBatch := len(axes.lhsBatch)
	vBatch := axisRange(0, numBatch)
	vLhsCross := axisRange(numBatch, len(lhsCross))
	vRhsCross := axisRange(numBatch+len(lhsCross), len(rhsCross))
	if v.Rank() != numBatch+len(lhsCross)+len(rhsCross) {
		panic(fmt.Errorf("dotgrad: output gradient has shape %s, expected rank %d for DotGeneral of %s and %s "+
			"with %d batch axes", v.Shape(), numBatch+len(lhsCross)+len(rhsCross), lhs.Shape(), rhs.Shape(), numBatch))
	}

	// Gradient for lhs: contract(v, rhs) has axes [batch..., lhs cross..., rhs contracting (sorted)...].
	lhsGrad := contract(v, vRhsCross, vBatch, rhs, rhsCross, axes.rhsBatch)
	lhsGradAxes := slices.Concat(axes.lhsBatch, lhsCross,
		pairedAxes(sortedCopy(axes.rhsContracting), axes.rhsContracting, axes.lhsContracting))
	lhsGrad = transposeToOperand(lhsGrad, lhsGradAxes)

	// Gradient for rhs: contract(lhs, v) has axes [batch..., lhs contracting (sorted)..., rhs cross...],
	// which for a dense layer is already the [in, out] order of its weights.
	rhsGrad := contract(lhs, lhsCross, axes.lhsBatch, v, vLhsCross, vBatch)
	rhsGradAxes := slices.Concat(axes.rhsBatch,
		pairedAxes(sortedCopy(axes.lhsContracting), axes.lhsContracting, axes.rhsContracting), rhsCross)
	rhsGrad = transposeToOperand(rhsGrad, rhsGradAxes)

	return []*graph.Node{lhsGrad, rhsGrad}
}

// contract returns DotGeneral(a, aContracting, aBatch, b, bContracting, bBatch), whose axes are
// [batch..., a free..., b free...] with the free axes of each operand in increasing order.
//
// When nothing is contracted, the result is a batched outer product, built as a broadcast multiply
// that allocates only the output. The large-matrix path of the pure-Go DotGeneral would pad the
// contracting size of 1 up to its block size (32 for float32) and do 32 times the work.
func contract(a *graph.Node, aContracting, aBatch []int, b *graph.Node, bContracting, bBatch []int) *graph.Node {
	if len(aContracting) > 0 {
		return graph.DotGeneral(a, aContracting, aBatch, b, bContracting, bBatch)
	}
	aFree := crossAxes(a.Rank(), nil, aBatch)
	bFree := crossAxes(b.Rank(), nil, bBatch)
	numBatch := len(aBatch)

	// a becomes [batch..., a free..., 1 x len(bFree)] and b becomes [batch..., 1 x len(aFree), b free...].
	aAligned := transposeIfNeeded(a, slices.Concat(aBatch, aFree))
	aAligned = graph.InsertAxes(aAligned, slices.Repeat([]int{-1}, len(bFree))...)
	bAligned := transposeIfNeeded(b, slices.Concat(bBatch, bFree))
	bAligned = graph.InsertAxes(bAligned, slices.Repeat([]int{numBatch}, len(aFree))...)
	return graph.Mul(aAligned, bAligned)
}

// transposeToOperand transposes grad, whose axis k corresponds to the operand's axis
// operandAxes[k], to the operand's axis order.
func transposeToOperand(grad *graph.Node, operandAxes []int) *graph.Node {
	permutation := make([]int, len(operandAxes))
	for gradAxis, operandAxis := range operandAxes {
		permutation[operandAxis] = gradAxis
	}
	return transposeIfNeeded(grad, permutation)
}

// transposeIfNeeded returns graph.TransposeAllAxes(x, permutation...), or x itself when the
// permutation is the identity.
func transposeIfNeeded(x *graph.Node, permutation []int) *graph.Node {
	for ii, axis := range permutation {
		if ii != axis {
			return graph.TransposeAllAxes(x, permutation...)
		}
	}
	return x
}

// crossAxes returns, in increasing order, the axes of an operand of the given rank that are
// neither contracting nor batch axes.
func crossAxes(rank int, contracting, batch []int) []int {
	cross := make([]int, 0, rank)
	for axis := range rank {
		if !slices.Contains(contracting, axis) && !slices.Contains(batch, axis) {
			cross = append(cross, axis)
		}
	}
	return cross
}

// pairedAxes maps each axis in axes, which must appear in from, to the axis at the same position
// in to.
func pairedAxes(axes, from, to []int) []int {
	paired := make([]int, len(axes))
	for ii, axis := range axes {
		paired[ii] = to[slices.Index(from, axis)]
	}
	return paired
}

// axisRange returns the count axes start, start+1, ..., start+count-1.
func axisRange(start, count int) []int {
	axes := make([]int, count)
	for ii := range axes {
		axes[ii] = start + ii
	}
	return axes
}

// sortedCopy returns a sorted copy of axes.
func sortedCopy(axes []int) []int {
	sorted := slices.Clone(axes)
	slices.Sort(sorted)
	return sorted
}
