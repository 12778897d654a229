// Package train runs the training of a ViT with a sharpness-aware optimizer. Each step kind (plain
// or reuse, and SAM) is its own compiled program, chosen on the host by the step number modulo k,
// and all programs share the same variables. The package also evaluates, writes metrics, and
// writes atomic checkpoints from which a run resumes exactly.
package train

import (
	"fmt"
	"math"
	"time"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:staticcheck // GoMLX graph code reads best with the ops unqualified.
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/looksam/vitsam/datasets"
	"github.com/looksam/vitsam/models/vit"
	"github.com/looksam/vitsam/optimizers/looksam"
)

// Config is the configuration of a training run.
type Config struct {
	Model     vit.Config
	Optimizer looksam.Config
	Schedule  Schedule
	// Seed fixes the initial weights, the data order and the dropout masks.
	Seed uint64
	// BatchSize is the number of examples per training step.
	BatchSize int
	// EvalBatchSize is the number of examples per evaluation program run; 0 means 500.
	EvalBatchSize int
	// LabelSmoothing is epsilon of label smoothing, in [0, 1).
	LabelSmoothing float64
	// Mixup is alpha of mixup's Beta(alpha, alpha) mixing weight; 0 turns mixup off. With mixup
	// the step programs take soft targets instead of integer labels (see mixup.go).
	Mixup float64

	// Devices is the number of devices that share each batch (data parallelism); 0 and 1 mean one
	// device. More than one needs a backend with that many devices (XLA), a BatchSize that divides
	// by it, and rounds EvalBatchSize up to a multiple of it.
	Devices int
	// PerReplicaPerturbation computes the SAM perturbation on each device from the gradient of
	// its slice of the batch, instead of from the gradient averaged over the devices.
	PerReplicaPerturbation bool
	// DumpHLODir, when set, receives the StableHLO text of every program that the XLA backend
	// compiles for this trainer, one NAME.mlir file per program.
	DumpHLODir string
}

// Validate returns an error naming the first invalid value.
func (c Config) Validate() error {
	if err := c.Model.Validate(); err != nil {
		return err
	}
	if _, err := looksam.New(c.Optimizer); err != nil {
		return err
	}
	if err := c.Schedule.Validate(); err != nil {
		return err
	}
	if c.BatchSize < 1 {
		return fmt.Errorf("invalid batch size %d: it must be at least 1", c.BatchSize)
	}
	if err := c.validateDevices(); err != nil {
		return err
	}
	if c.EvalBatchSize < 0 {
		return fmt.Errorf("invalid evaluation batch size %d: it must be at least 1, or 0 for the default", c.EvalBatchSize)
	}
	if c.LabelSmoothing < 0 || c.LabelSmoothing >= 1 {
		return fmt.Errorf("invalid label smoothing %g: it must be in [0, 1)", c.LabelSmoothing)
	}
	if err := c.validateMixup(); err != nil {
		return err
	}
	return nil
}

// Context scopes of the variables the trainer owns.
const (
	ModelScope = "model"
	trainScope = "/train"
	rngName    = "dropout_rng"
)

// Trainer holds the model, the optimizer, their variables and one compiled program per step kind.
type Trainer struct {
	cfg     Config
	backend backends.Backend
	ctx     *context.Context
	model   *vit.Model
	opt     *looksam.Optimizer

	programs map[looksam.StepKind]*context.Exec
	eval     *context.Exec
	parallel *dataParallel // nil on one device
	builds   map[looksam.StepKind]int
	step     int64
}

// NewTrainer validates cfg and prepares the programs; nothing is compiled until the first step.
func NewTrainer(backend backends.Backend, cfg Config) (*Trainer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.EvalBatchSize == 0 {
		cfg.EvalBatchSize = 500
	}
	model, err := vit.New(cfg.Model, cfg.Seed)
	if err != nil {
		return nil, err
	}
	opt, err := looksam.New(cfg.Optimizer)
	if err != nil {
		return nil, err
	}
	t := &Trainer{
		cfg: cfg, backend: backend, ctx: context.New(), model: model, opt: opt,
		programs: map[looksam.StepKind]*context.Exec{}, builds: map[looksam.StepKind]int{},
	}
	t.ctx = t.ctx.Checked(false)

	rngState, err := RNGStateFromSeed(int64(cfg.Seed))
	if err != nil {
		return nil, fmt.Errorf("creating the dropout RNG state: %w", err)
	}
	t.ctx.InAbsPath(trainScope).VariableWithValue(rngName, rngState).SetTrainable(false)

	if err := t.setupDevices(); err != nil {
		return nil, err
	}
	for _, kind := range opt.Kinds() {
		exec, err := t.newStepProgram(kind)
		if err != nil {
			return nil, fmt.Errorf("creating the %s step program: %w", kind, err)
		}
		t.programs[kind] = exec.WithName("train_step_" + string(kind))
	}
	eval, err := t.newEvalProgram()
	if err != nil {
		return nil, fmt.Errorf("creating the evaluation program: %w", err)
	}
	t.eval = eval.WithName("eval")
	return t, nil
}

// stepGraph returns the graph function of one training step of the given kind. Its inputs are
// images [batch, H, W, C], labels [batch] int32 and the learning rate. With mixup, soft targets
// [batch, classes] float32 take the place of the labels. Its outputs are the optimizer's
// Diagnostics vector and the number of correct predictions of the batch.
func (t *Trainer) stepGraph(kind looksam.StepKind) func(ctx *context.Context, images, labels, lr *Node) (*Node, *Node) {
	return func(ctx *context.Context, images, labels, lr *Node) (*Node, *Node) {
		t.builds[kind]++
		g := images.Graph()
		rngVar := ctx.GetVariableByScopeAndName(trainScope, rngName)
		rng := rngVar.ValueGraph(g)

		// Both passes of a SAM step start from the same RNG state, so they draw the same dropout
		// masks and g and g_s differ only by the perturbation.
		var logits, nextRNG *Node
		lossFn := func(ctx *context.Context) *Node {
			passLogits, passRNG := t.model.Logits(ctx.In(ModelScope), images, true, rng)
			if logits == nil {
				logits, nextRNG = passLogits, passRNG
			}
			return ReduceAllMean(t.trainingLoss(passLogits, labels))
		}
		diagnostics := t.opt.BuildStepWith(ctx, kind, lr, lossFn, t.stepOptions())
		if nextRNG != rng {
			rngVar.SetValueGraph(nextRNG)
		}
		return diagnostics, t.trainingCorrect(logits, labels)
	}
}

// evalGraph returns the summed loss and the number of correct predictions over the rows of a batch
// where mask is true.
func (t *Trainer) evalGraph(ctx *context.Context, images, labels, mask *Node) (*Node, *Node) {
	logits, _ := t.model.Logits(ctx.In(ModelScope), images, false, nil)
	losses := crossEntropy(logits, labels, 0)
	lossSum := ReduceAllSum(Where(mask, losses, ZerosLike(losses)))
	return ConvertDType(lossSum, dtypes.Float32), correctCount(logits, labels, mask)
}

// StepResult is the report of one training step.
type StepResult struct {
	Step         int64 // 0-based number of the step just taken
	Kind         looksam.StepKind
	LearningRate float64
	Loss         float64
	Accuracy     float64 // on the training batch, before the update
	Diagnostics  map[string]float64
	Duration     time.Duration
}

// Step returns the number of steps taken so far, which is the number of the next step.
func (t *Trainer) Step() int64 { return t.step }

// Kind returns the kind of the given step.
func (t *Trainer) Kind(step int64) looksam.StepKind { return t.opt.Kind(step) }

// Optimizer returns the validated optimizer.
func (t *Trainer) Optimizer() *looksam.Optimizer { return t.opt }

// Context returns the context holding every variable.
func (t *Trainer) Context() *context.Context { return t.ctx }

// Config returns the configuration, with defaults filled in.
func (t *Trainer) Config() Config { return t.cfg }

// Builds returns how many times the graph of each step kind was built. Each program is built once
// per input shape, so a run with a fixed batch size builds each kind once.
func (t *Trainer) Builds() map[looksam.StepKind]int {
	out := make(map[looksam.StepKind]int, len(t.builds))
	for k, v := range t.builds {
		out[k] = v
	}
	return out
}

// TrainStep runs one step on batch b with the program of the step's kind.
func (t *Trainer) TrainStep(b datasets.Batch) (StepResult, error) {
	start := time.Now()
	kind := t.opt.Kind(t.step)
	lr := t.cfg.Schedule.At(t.step)
	images, targets, err := t.stepInputs(b)
	if err != nil {
		return StepResult{}, err
	}
	outputs, err := t.runStep(kind, images, targets, float32(lr))
	if err != nil {
		return StepResult{}, fmt.Errorf("step %d (%s): %w", t.step, kind, err)
	}
	values := tensors.MustCopyFlatData[float32](outputs[0])
	correct := tensors.ToScalar[float32](outputs[1])
	result := StepResult{
		Step: t.step, Kind: kind, LearningRate: lr,
		Accuracy:    float64(correct) / float64(b.Size),
		Diagnostics: make(map[string]float64, len(values)),
	}
	for i, name := range looksam.Diagnostics {
		result.Diagnostics[name] = float64(values[i])
	}
	result.Loss = result.Diagnostics["loss"]
	t.step++
	result.Duration = time.Since(start)
	return result, nil
}

// Evaluate returns the mean loss and the accuracy of the model on every example of d. The last
// batch is padded to EvalBatchSize and masked, so one evaluation program serves every batch.
func (t *Trainer) Evaluate(d *datasets.Dataset) (loss, accuracy float64, err error) {
	n := d.Len()
	if n == 0 {
		return 0, 0, fmt.Errorf("evaluating on %s/%s: the dataset is empty", d.Name, d.Split)
	}
	batch := t.cfg.EvalBatchSize
	size := d.ExampleSize()
	images := make([]float32, batch*size)
	labels := make([]int32, batch)
	mask := make([]bool, batch)
	var lossSum, correct float64
	for start := 0; start < n; start += batch {
		count := min(batch, n-start)
		copy(images, d.Images[start*size:(start+count)*size])
		clear(images[count*size:])
		copy(labels, d.Labels[start:start+count])
		clear(labels[count:])
		for i := range mask {
			mask[i] = i < count
		}
		outputs, err := t.runEval(
			tensors.FromFlatDataAndDimensions(images, batch, d.Height, d.Width, d.Channels),
			tensors.FromFlatDataAndDimensions(labels, batch),
			tensors.FromFlatDataAndDimensions(mask, batch))
		if err != nil {
			return 0, 0, fmt.Errorf("evaluating on %s/%s: %w", d.Name, d.Split, err)
		}
		lossSum += float64(tensors.ToScalar[float32](outputs[0]))
		correct += float64(tensors.ToScalar[float32](outputs[1]))
	}
	return lossSum / float64(n), correct / float64(n), nil
}

// SaveCheckpoint writes the trainer's variables and step to dir, keeping the newest keep files.
func (t *Trainer) SaveCheckpoint(dir string, keep int) (string, error) {
	return SaveCheckpoint(dir, t.ctx, CheckpointMeta{Step: t.step, Config: t.cfg}, keep)
}

// Restore loads the checkpoint at path and continues from its step. It must be called before the
// first step; the checkpoint's model and optimizer configuration must match the trainer's.
func (t *Trainer) Restore(path string) error {
	if t.step != 0 || len(t.builds) != 0 {
		return fmt.Errorf("restoring %s: the trainer has already run; restore before the first step", path)
	}
	meta, err := LoadCheckpoint(path, t.ctx)
	if err != nil {
		return err
	}
	if meta.Config.Model != t.cfg.Model {
		return fmt.Errorf("checkpoint %s contains model %+v, but this run requests %+v: use another checkpoint directory", path, meta.Config.Model, t.cfg.Model)
	}
	if a, b := meta.Config.Optimizer, t.cfg.Optimizer; a.Rule != b.Rule || a.Base != b.Base {
		return fmt.Errorf("checkpoint %s was written by %s over %s, but this run asks for %s over %s: use another checkpoint directory",
			path, a.Rule, a.Base, b.Rule, b.Base)
	}
	t.step = meta.Step
	return nil
}

// finite reports whether x is neither NaN nor infinite.
func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
