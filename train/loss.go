package train

import (
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:staticcheck // GoMLX graph code reads best with the ops unqualified.
)

// crossEntropy returns the per-example softmax cross-entropy of logits [batch, classes] against
// integer labels [batch], with label smoothing epsilon: the target is (1 - epsilon) on the label
// plus epsilon / classes on every class (Szegedy et al. 2016, Sec. 7).
//
//	loss_b = logsumexp(z_b) - sum_c y_bc z_bc
func crossEntropy(logits, labels *Node, smoothing float64) *Node {
	classes := logits.Shape().Dimensions[1]
	targets := OneHot(labels, classes, logits.DType())
	if smoothing > 0 {
		targets = AddScalar(MulScalar(targets, 1-smoothing), smoothing/float64(classes))
	}
	return softCrossEntropy(logits, targets)
}

// softCrossEntropy returns the per-example cross-entropy of logits against soft targets of the
// same shape, each row summing to 1.
func softCrossEntropy(logits, targets *Node) *Node {
	logProbs := LogSoftmax(logits, -1)
	return Neg(ReduceSum(Mul(targets, logProbs), -1))
}

// correctCount returns how many rows of logits have their maximum at the label, as float32.
// Rows where mask is false are not counted; mask may be nil.
func correctCount(logits, labels, mask *Node) *Node {
	predicted := ArgMax(logits, -1, labels.DType())
	correct := Equal(predicted, labels)
	if mask != nil {
		correct = LogicalAnd(correct, mask)
	}
	return ReduceAllSum(ConvertDType(correct, dtypes.Float32))
}
