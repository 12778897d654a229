package train

import (
	"fmt"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/distributed"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:staticcheck // GoMLX graph code reads best with the ops unqualified.
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/looksam/vitsam/optimizers/looksam"
)

// Data parallelism runs every program as SPMD (single program, multiple data) over a
// one-axis device mesh. Each device runs the same program on its own slice of the batch. The
// variables (weights, optimizer state, g_v, the step counter and the dropout RNG state) are
// replicated. The loss, g and g_s are averaged by explicit all-reduces, which
// looksam.StepOptions.MeanAcrossReplicas inserts. Every replica then applies the same update, so
// the replicas stay identical without any other communication.
//
// SPMD rather than GoMLX's AutoSharding (XLA Shardy), because:
//   - the per-replica perturbation needs each replica's local gradient, and AutoSharding's
//     program sees only the global batch, so its gradient is already the global one;
//   - AutoSharding forbids Graph.Distributed() collectives (GoMLX v0.26.0 panics), so the
//     MeanAcrossReplicas hook could not be used and the order "average g, then eps, then g_s,
//     then average g_s" would be left to the partitioner;
//   - each replica needs its own index for its dropout masks, which SPMD gets as a per-device
//     input.
//
// The pure-Go backend has one device and implements neither strategy, so Devices > 1 needs XLA.

// spmdBackend is the trainer's backend for data-parallel programs. It works around a defect of
// GoMLX v0.26.0 that stops context.Exec from building any SPMD program that uses a variable.
// In SPMD, the context gives each variable's parameter the mesh's replicated sharding spec
// (pkg/ml/context/variables.go, paramNode). The XLA builder looks that mesh up only among the
// meshes of AutoSharding (backends/xla/builder.go, shardingSpecToShardy), so building fails with
// `mesh "..." not found`. In SPMD each device receives the whole parameter, so the annotation
// carries nothing, and spmdBackend's builders drop it. The context keeps the spec, because it
// needs it to split and merge the per-device values.
type spmdBackend struct{ backends.Backend }

// Builder returns the wrapped backend's builder, with Parameter dropping sharding specs in SPMD.
func (b spmdBackend) Builder(name string) backends.Builder {
	return &spmdBuilder{Builder: b.Backend.Builder(name)}
}

// spmdBuilder is a backends.Builder that drops the sharding spec of parameters once it is SPMD.
type spmdBuilder struct {
	backends.Builder
	spmd bool
}

// DistributedSPMD marks the builder as SPMD and passes the call on.
func (b *spmdBuilder) DistributedSPMD(numDevices int) error {
	b.spmd = true
	return b.Builder.DistributedSPMD(numDevices)
}

// Parameter creates a parameter, without its sharding spec in SPMD.
func (b *spmdBuilder) Parameter(name string, shape shapes.Shape, sharding *backends.ShardingSpec) (backends.Op, error) {
	if b.spmd {
		sharding = nil
	}
	return b.Builder.Parameter(name, shape, sharding)
}

// replicaAxis is the name of the device mesh's only axis.
const replicaAxis = "replica"

// dataParallel holds the device mesh of a data-parallel trainer.
type dataParallel struct {
	devices int
	mesh    *distributed.DeviceMesh
	backend spmdBackend // the backend of every program of the trainer
}

// validateDevices returns an error for a negative device count or a batch size that the devices
// cannot share equally.
func (c Config) validateDevices() error {
	if c.Devices < 0 {
		return fmt.Errorf("invalid device count %d: it must be at least 1, or 0 for one device", c.Devices)
	}
	if c.Devices > 1 && c.BatchSize%c.Devices != 0 {
		return fmt.Errorf("batch size %d does not divide by %d devices: each device takes an equal slice of the batch, so use a multiple of %d",
			c.BatchSize, c.Devices, c.Devices)
	}
	return nil
}

// setupDevices prepares data parallelism when Devices is more than 1. It checks that the backend
// has the devices, builds the mesh, and rounds the evaluation batch up to a multiple of the
// device count (Evaluate masks the padding rows).
func (t *Trainer) setupDevices() error {
	devices := t.cfg.Devices
	if devices <= 1 {
		return nil
	}
	if have := t.backend.NumDevices(); have < devices {
		return fmt.Errorf("data parallelism over %d devices needs a backend with at least %d devices, but backend %s has %d: "+
			"use an XLA backend (on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N simulates N devices) or lower the device count",
			devices, devices, t.backend.Name(), have)
	}
	mesh, err := distributed.NewDeviceMesh([]int{devices}, []string{replicaAxis})
	if err != nil {
		return fmt.Errorf("creating the mesh of %d devices: %w", devices, err)
	}
	t.parallel = &dataParallel{devices: devices, mesh: mesh, backend: spmdBackend{t.backend}}
	t.cfg.EvalBatchSize = (t.cfg.EvalBatchSize + devices - 1) / devices * devices
	return nil
}

// stepOptions returns the data-parallel options of the optimizer's step.
func (t *Trainer) stepOptions() looksam.StepOptions {
	opts := looksam.StepOptions{PerReplicaPerturbation: t.cfg.PerReplicaPerturbation}
	if t.parallel != nil {
		opts.MeanAcrossReplicas = meanAcrossReplicas(t.parallel.devices)
	}
	return opts
}

// newStepProgram returns the program of one step kind, SPMD over the mesh when data-parallel.
func (t *Trainer) newStepProgram(kind looksam.StepKind) (*context.Exec, error) {
	if t.parallel == nil {
		return context.NewExecAny(t.backend, t.ctx, t.stepGraph(kind))
	}
	exec, err := context.NewExecAny(t.parallel.backend, t.ctx, t.replicaStepGraph(kind))
	if err != nil {
		return nil, err
	}
	return exec.SPMD(t.parallel.mesh), nil
}

// newEvalProgram returns the evaluation program, SPMD over the mesh when data-parallel.
func (t *Trainer) newEvalProgram() (*context.Exec, error) {
	if t.parallel == nil {
		return context.NewExecAny(t.backend, t.ctx, t.evalGraph)
	}
	exec, err := context.NewExecAny(t.parallel.backend, t.ctx, t.replicaEvalGraph)
	if err != nil {
		return nil, err
	}
	return exec.SPMD(t.parallel.mesh), nil
}

// replicaStepGraph returns the graph function of one step kind on one replica. It takes the
// replica's slice of the batch, the learning rate and the replica index (an int32 scalar), and
// wraps stepGraph:
//
//   - Dropout: stepGraph reads the RNG state from the variable's current graph value and draws the
//     masks of both passes of a SAM step from it. Setting that value first to a state derived
//     from the replica index gives each replica its own masks, the same in both passes. Afterwards
//     the variable gets a next state that is the same on every replica, or keeps its value when
//     no mask was drawn.
//   - The number of correct predictions is summed over the replicas, so every replica returns
//     the count of the whole batch. The diagnostics are already averaged by the optimizer.
func (t *Trainer) replicaStepGraph(kind looksam.StepKind) func(ctx *context.Context, images, labels, lr, replica *Node) (*Node, *Node) {
	step := t.stepGraph(kind)
	return func(ctx *context.Context, images, labels, lr, replica *Node) (*Node, *Node) {
		g := images.Graph()
		rngVar := ctx.GetVariableByScopeAndName(trainScope, rngName)
		shared := rngVar.ValueGraph(g)
		next, masks := replicaDropoutRNG(shared, replica)
		rngVar.SetValueGraph(masks)

		diagnostics, correct := step(ctx, images, labels, lr)

		if rngVar.ValueGraph(g) == masks {
			rngVar.SetValueGraph(shared)
		} else {
			rngVar.SetValueGraph(next)
		}
		return diagnostics, sumAcrossReplicas(correct)
	}
}

// replicaEvalGraph is evalGraph on one replica's slice of the batch, with the loss sum and the
// count summed over the replicas.
func (t *Trainer) replicaEvalGraph(ctx *context.Context, images, labels, mask *Node) (*Node, *Node) {
	lossSum, correct := t.evalGraph(ctx, images, labels, mask)
	sums := images.Graph().Distributed().AllReduce([]*Node{lossSum, correct}, backends.ReduceOpSum)
	return sums[0], sums[1]
}

// replicaSalt is an odd 64-bit constant (2^64 divided by the golden ratio), so that
// (replica + 1) * replicaSalt differs for every replica index below 2^64.
const replicaSalt = 0x9E3779B97F4A7C15

// replicaDropoutRNG returns the RNG state that the replica draws its dropout masks from and the
// state that every replica stores for the next step.
//
// The shared state is split in two. next is fresh random bits, so the next step's streams do not
// overlap this step's. masks is the advanced state with its Philox key XORed with
// (replica + 1) * replicaSalt, a key that no other replica uses. Philox is the only algorithm of
// GoMLX v0.26.0's XLA backend, and XLA's RngBitGeneratorExpander takes the Philox key from word 0
// of the [3]uint64 state and the 128-bit counter from words 1 and 2.
func replicaDropoutRNG(shared, replica *Node) (next, masks *Node) {
	g := shared.Graph()
	advanced, fresh := RNGStateSplit(shared)
	saltedIndex := ConvertDType(AddScalar(ConvertDType(replica, dtypes.Int64), 1), dtypes.Uint64)
	keyMask := Mul(Const(g, []uint64{replicaSalt, 0, 0}), saltedIndex)
	return fresh, BitwiseXor(advanced, keyMask)
}

// meanAcrossReplicas returns the MeanAcrossReplicas hook for the given number of replicas: an
// all-reduce sum over the mesh divided by the count.
func meanAcrossReplicas(replicas int) func(x *Node) *Node {
	return func(x *Node) *Node {
		return DivScalar(sumAcrossReplicas(x), float64(replicas))
	}
}

// sumAcrossReplicas returns the sum of x over all replicas of an SPMD graph.
func sumAcrossReplicas(x *Node) *Node {
	return x.Graph().Distributed().AllReduceOne(x, backends.ReduceOpSum)
}

// runStep runs the program of kind on a batch: whole on one device, or split along the batch axis
// when data-parallel. It returns the outputs of device 0, which hold the values of the whole batch.
func (t *Trainer) runStep(kind looksam.StepKind, images, labels *tensors.Tensor, lr float32) ([]*tensors.Tensor, error) {
	program := t.programs[kind]
	if t.parallel == nil {
		return t.exec(program, images, labels, lr)
	}
	n := t.parallel.devices
	imageShards, err := splitBatch(images, n)
	if err != nil {
		return nil, err
	}
	labelShards, err := splitBatch(labels, n)
	if err != nil {
		return nil, err
	}
	args := make([]any, 0, 4*n)
	for r := range n {
		args = append(args, imageShards[r], labelShards[r], lr, int32(r))
	}
	outputs, err := t.exec(program, args...)
	if err != nil {
		return nil, err
	}
	return outputs[:len(outputs)/n], nil
}

// runEval runs the evaluation program on a batch: whole on one device, or split along the batch
// axis when data-parallel. It returns the outputs of device 0, which hold the sums of the batch.
func (t *Trainer) runEval(images, labels, mask *tensors.Tensor) ([]*tensors.Tensor, error) {
	if t.parallel == nil {
		return t.exec(t.eval, images, labels, mask)
	}
	n := t.parallel.devices
	args := make([]any, 3*n)
	for i, x := range []*tensors.Tensor{images, labels, mask} {
		shards, err := splitBatch(x, n)
		if err != nil {
			return nil, err
		}
		for r, shard := range shards {
			args[3*r+i] = shard
		}
	}
	outputs, err := t.exec(t.eval, args...)
	if err != nil {
		return nil, err
	}
	return outputs[:len(outputs)/n], nil
}

// exec runs program, writing the StableHLO of any program it compiles to DumpHLODir when set.
func (t *Trainer) exec(program *context.Exec, args ...any) ([]*tensors.Tensor, error) {
	if t.cfg.DumpHLODir == "" {
		return program.Exec(args...)
	}
	var outputs []*tensors.Tensor
	err := captureStableHLO(t.cfg.DumpHLODir, func() error {
		var err error
		outputs, err = program.Exec(args...)
		return err
	})
	return outputs, err
}

// splitBatch splits x along its first axis into n tensors of equal size, in order.
func splitBatch(x *tensors.Tensor, n int) ([]*tensors.Tensor, error) {
	shape := x.Shape()
	rows := shape.Dimensions[0]
	if rows%n != 0 {
		return nil, fmt.Errorf("a batch of %d examples does not split evenly across %d devices: use a batch size that is a multiple of %d",
			rows, n, n)
	}
	shardShape := shape.Clone()
	shardShape.Dimensions[0] = rows / n
	shards := make([]*tensors.Tensor, n)
	var copyErr error
	err := x.ConstBytes(func(data []byte) {
		size := len(data) / n
		for i := range shards {
			shard := tensors.FromShape(shardShape)
			copyErr = shard.MutableBytes(func(dst []byte) { copy(dst, data[i*size:(i+1)*size]) })
			if copyErr != nil {
				return
			}
			shards[i] = shard
		}
	})
	if err == nil {
		err = copyErr
	}
	if err != nil {
		return nil, fmt.Errorf("splitting a batch of shape %s across %d devices: %w", shape, n, err)
	}
	return shards, nil
}
