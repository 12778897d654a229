package looksam

import (
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:staticcheck // GoMLX graph code reads best with the ops unqualified.
)

// accumulationDType is the dtype of the optimizer's arithmetic and state for parameters of dtype
// dt: float64 stays float64 and everything else, float16 and bfloat16 included, is computed in
// float32. Half precision cannot hold a norm's sum of squares (float16 overflows at 65504) nor a
// small epsilon (1e-12 rounds to zero), so rounding to the parameter dtype happens only once, when
// the new weights are stored.
func accumulationDType(dt dtypes.DType) dtypes.DType {
	if dt == dtypes.Float64 {
		return dtypes.Float64
	}
	return dtypes.Float32
}

// toAcc converts x to its accumulation dtype, or returns it unchanged when it already has it.
func toAcc(x *Node) *Node {
	acc := accumulationDType(x.DType())
	if x.DType() == acc {
		return x
	}
	return ConvertDType(x, acc)
}

// toAccAll applies toAcc to every node.
func toAccAll(xs []*Node) []*Node {
	out := make([]*Node, len(xs))
	for i, x := range xs {
		out[i] = toAcc(x)
	}
	return out
}

// sumSquares returns sum(x^2) as a scalar.
func sumSquares(x *Node) *Node { return ReduceAllSum(Square(x)) }

// norm returns the Euclidean norm |x| of one tensor as a scalar.
func norm(x *Node) *Node { return Sqrt(sumSquares(x)) }

// globalNorm returns the Euclidean norm of all tensors taken as one vector.
func globalNorm(xs []*Node) *Node {
	total := sumSquares(xs[0])
	for _, x := range xs[1:] {
		total = Add(total, sumSquares(x))
	}
	return Sqrt(total)
}

// norms returns the norm of each tensor.
func norms(xs []*Node) []*Node {
	out := make([]*Node, len(xs))
	for i, x := range xs {
		out[i] = norm(x)
	}
	return out
}

// dot returns the inner product <a, b> summed over all tensors.
func dot(a, b []*Node) *Node {
	total := ReduceAllSum(Mul(a[0], b[0]))
	for i := 1; i < len(a); i++ {
		total = Add(total, ReduceAllSum(Mul(a[i], b[i])))
	}
	return total
}

// safeDiv returns num / (den + epsilon) where den > 0 and 0 where den <= 0, for a scalar den. The guard, not the
// epsilon, keeps a zero norm from producing Inf or NaN, so it holds for any epsilon, zero included. A NaN den
// fails both comparisons and gives NaN, so a NaN norm shows in the result instead of becoming 0.
func safeDiv(num, den *Node, epsilon float64) *Node {
	zero := ScalarZero(den.Graph(), den.DType())
	nonPositive := LessOrEqual(den, zero)
	one := ScalarOne(den.Graph(), den.DType())
	safeDen := Where(nonPositive, one, AddScalar(den, epsilon))
	return Where(nonPositive, zero, Div(num, safeDen))
}

// scaleAll multiplies every tensor by the scalar s.
func scaleAll(xs []*Node, s *Node) []*Node {
	out := make([]*Node, len(xs))
	for i, x := range xs {
		out[i] = Mul(x, s)
	}
	return out
}
