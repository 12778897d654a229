package train

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/distributed"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:staticcheck // GoMLX graph code reads best with the ops unqualified.
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/looksam/vitsam/datasets"
	"github.com/looksam/vitsam/models/vit"
	"github.com/looksam/vitsam/optimizers/looksam"
	"github.com/looksam/vitsam/pjrt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newCPUBackend returns an XLA backend over the CPU PJRT plugin with the given number of simulated
// devices, or skips the test when no plugin is installed.
func newCPUBackend(tb testing.TB, devices int) backends.Backend {
	tb.Helper()
	if !pjrt.XLACompiledIn {
		tb.Skip("skipping: this build leaves the XLA backend out (noxla tag or CGO_ENABLED=0), and data parallelism needs it")
	}
	discovery, err := pjrt.FindPlugins(pjrt.SearchOptions{Plugin: pjrt.PlatformCPU})
	if err != nil {
		tb.Skipf("skipping: no CPU PJRT plugin is installed, so data parallelism cannot run (`make xla-cpu` installs one).\n%v", err)
	}
	plugin, _ := discovery.Best()
	backend, _, err := pjrt.SelectWith("xla:"+plugin.Path, pjrt.Options{CPUDeviceCount: devices})
	require.NoError(tb, err)
	tb.Cleanup(backend.Finalize)
	require.Equal(tb, devices, backend.NumDevices(), "devices of the CPU plugin")
	return backend
}

// testBatch returns a batch of n 28x28 images of 10 classes, where class c lights up the c-th band
// of rows plus noise.
func testBatch(n int, seed uint64) datasets.Batch {
	rng := rand.New(rand.NewPCG(seed, 3))
	b := datasets.Batch{Images: make([]float32, n*28*28), Labels: make([]int32, n), Size: n, Shape: [4]int{n, 28, 28, 1}}
	for i := range n {
		label := int32(rng.IntN(10))
		b.Labels[i] = label
		for r := range 28 {
			for c := range 28 {
				v := 0.2 * rng.Float32()
				if r/3 == int(label) {
					v += 0.8
				}
				b.Images[(i*28+r)*28+c] = v
			}
		}
	}
	return b
}

// repeatBatch returns a batch holding copies copies of b, one after the other.
func repeatBatch(b datasets.Batch, copies int) datasets.Batch {
	out := datasets.Batch{Size: b.Size * copies, Shape: b.Shape}
	out.Shape[0] = out.Size
	for range copies {
		out.Images = append(out.Images, b.Images...)
		out.Labels = append(out.Labels, b.Labels...)
	}
	return out
}

// parallelConfig returns the configuration of a one-block ViT, smaller than mnist-tiny because
// XLA compiles every program of every trainer, over SGD with momentum. SGD's first steps amplify
// no rounding error, unlike AdamW's first update, lr * g / |g| element-wise, which turns a rounding
// difference in a gradient near 0 into a difference of lr.
func parallelConfig(rule looksam.Rule, k, devices int) Config {
	model := vit.Presets["mnist-tiny"]
	model.Hidden, model.Depth, model.Heads, model.MLPSize = 16, 1, 2, 32
	return Config{
		Model: model,
		Optimizer: looksam.Config{Rule: rule, Base: looksam.BaseSGD, Rho: 0.05, Alpha: 0.7, K: k,
			Momentum: 0.9, WeightDecay: 1e-4},
		Schedule:  Schedule{Peak: 0.05, Warmup: 0, Total: 40, Decay: "cosine"},
		Seed:      7,
		BatchSize: 16,
		Devices:   devices,
	}
}

// floatVariables returns the value of every float variable of the trainer: weights, momentum,
// g_v.
func floatVariables(t *testing.T, tr *Trainer) map[string][]float32 {
	t.Helper()
	out := map[string][]float32{}
	for v := range tr.Context().IterVariables() {
		value, err := v.Value()
		require.NoError(t, err, "value of %s", v.ScopeAndName())
		if value.DType() == dtypes.Float32 {
			out[v.ScopeAndName()] = tensors.MustCopyFlatData[float32](value)
		}
	}
	return out
}

// assertAllClose checks every variable of got against want within |got - want| <= atol + rtol |want|.
func assertAllClose(t *testing.T, want, got map[string][]float32, atol, rtol float64, msg string) {
	t.Helper()
	require.Equal(t, sortedKeys(want), sortedKeys(got), "%s: variable names", msg)
	for name, w := range want {
		g := got[name]
		require.Len(t, g, len(w), "%s: %s", msg, name)
		worst, at := 0.0, -1
		for i := range w {
			excess := math.Abs(float64(g[i])-float64(w[i])) - (atol + rtol*math.Abs(float64(w[i])))
			if excess > worst || math.IsNaN(excess) {
				worst, at = excess, i
			}
		}
		if at >= 0 {
			t.Errorf("%s: %s[%d]: got %.9g, want %.9g (beyond tolerance by %.3g)", msg, name, at, g[at], w[at], worst)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func TestConfigRejectsBatchNotDividingDevices(t *testing.T) {
	cfg := parallelConfig(looksam.RuleLookSAM, 5, 4)
	cfg.BatchSize = 30
	err := cfg.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "batch size 30 does not divide by 4 devices")

	_, err = NewTrainer(testBackend, cfg)
	require.Error(t, err, "NewTrainer validates before it builds anything")
	assert.Contains(t, err.Error(), "batch size 30 does not divide by 4 devices")

	cfg.Devices = -1
	cfg.BatchSize = 16
	err = cfg.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "invalid device count -1")
}

func TestGoBackendRejectsSeveralDevices(t *testing.T) {
	_, err := NewTrainer(testBackend, parallelConfig(looksam.RuleLookSAM, 5, 4))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "at least 4 devices")
	assert.Contains(t, err.Error(), "has 1")
}

func TestDumpHLOOnGoBackendWritesNothing(t *testing.T) {
	cfg := parallelConfig(looksam.RuleSAM, 1, 0)
	cfg.DumpHLODir = t.TempDir()
	tr, err := NewTrainer(testBackend, cfg)
	require.NoError(t, err)
	_, err = tr.TrainStep(testBatch(16, 1))
	require.NoError(t, err)
	entries, err := os.ReadDir(cfg.DumpHLODir)
	require.NoError(t, err)
	assert.Empty(t, entries, "the pure-Go backend compiles no StableHLO")
}

func TestDataParallelMatchesOneDevice(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles several XLA programs, about 15 s each on 2 cores")
	}
	const devices = 4
	backend := newCPUBackend(t, devices)
	tests := []struct {
		rule looksam.Rule
		k    int
		want []looksam.StepKind
	}{
		{looksam.RuleSAM, 1, []looksam.StepKind{looksam.KindSAM, looksam.KindSAM}},
		{looksam.RuleLookSAM, 2, []looksam.StepKind{looksam.KindSAM, looksam.KindReuse}},
		{looksam.RuleLayerSAM, 1, []looksam.StepKind{looksam.KindSAM, looksam.KindSAM}},
	}
	for _, tt := range tests {
		t.Run(string(tt.rule), func(t *testing.T) {
			one, err := NewTrainer(backend, parallelConfig(tt.rule, tt.k, 0))
			require.NoError(t, err)
			parallel, err := NewTrainer(backend, parallelConfig(tt.rule, tt.k, devices))
			require.NoError(t, err)

			for step, kind := range tt.want {
				b := testBatch(16, uint64(10+step))
				want, err := one.TrainStep(b)
				require.NoError(t, err)
				got, err := parallel.TrainStep(b)
				require.NoError(t, err)
				require.Equal(t, kind, got.Kind, "kind of step %d", step)

				for _, name := range looksam.Diagnostics {
					w, g := want.Diagnostics[name], got.Diagnostics[name]
					if math.IsNaN(w) {
						assert.True(t, math.IsNaN(g), "step %d %s: got %g, want NaN", step, name, g)
						continue
					}
					assert.InDelta(t, w, g, 1e-5+1e-4*math.Abs(w), "step %d %s", step, name)
				}
				assert.Equal(t, want.Accuracy, got.Accuracy, "step %d accuracy, counted over all replicas", step)
				assertAllClose(t, floatVariables(t, one), floatVariables(t, parallel), 1e-6, 1e-4,
					fmt.Sprintf("variables after step %d", step))
			}
		})
	}
}

func TestDataParallelEvaluateMatchesOneDevice(t *testing.T) {
	const devices = 4
	backend := newCPUBackend(t, devices)
	cfg := parallelConfig(looksam.RuleSAM, 1, 0)
	cfg.EvalBatchSize = 10 // rounded up to 12 on 4 devices; 25 examples leave a padded last batch
	b := testBatch(25, 5)
	d := &datasets.Dataset{Name: "test", Height: 28, Width: 28, Channels: 1, Images: b.Images, Labels: b.Labels,
		ClassNames: []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}}

	one, err := NewTrainer(backend, cfg)
	require.NoError(t, err)
	wantLoss, wantAccuracy, err := one.Evaluate(d)
	require.NoError(t, err)

	cfg.Devices = devices
	parallel, err := NewTrainer(backend, cfg)
	require.NoError(t, err)
	assert.Equal(t, 12, parallel.Config().EvalBatchSize)
	gotLoss, gotAccuracy, err := parallel.Evaluate(d)
	require.NoError(t, err)
	assert.InDelta(t, wantLoss, gotLoss, 1e-5*wantLoss)
	assert.Equal(t, wantAccuracy, gotAccuracy)
}

func TestDataParallelReplicasStayIdentical(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles several XLA programs, about 15 s each on 2 cores")
	}
	const devices = 4
	backend := newCPUBackend(t, devices)
	cfg := parallelConfig(looksam.RuleLookSAM, 5, devices)
	cfg.Optimizer.Base = looksam.BaseAdamW
	cfg.Model.Dropout = 0.1 // replicas draw different masks, and must still apply the same update
	tr, err := NewTrainer(backend, cfg)
	require.NoError(t, err)
	for step := range 10 {
		_, err := tr.TrainStep(testBatch(16, uint64(100+step)))
		require.NoError(t, err)
	}

	checked := 0
	for v := range tr.Context().IterVariables() {
		value, err := v.DistributedValue()
		require.NoError(t, err, "%s", v.ScopeAndName())
		shards := value.Shards()
		require.Len(t, shards, devices, "%s", v.ScopeAndName())
		first := shards[0].Value()
		for r, shard := range shards[1:] {
			assert.Equal(t, first, shard.Value(), "%s on replica %d differs from replica 0", v.ScopeAndName(), r+1)
		}
		checked++
	}
	assert.Greater(t, checked, 10, "variables checked")
}

func TestReplicaDropoutRNG(t *testing.T) {
	const devices = 4
	backend := newCPUBackend(t, devices)
	mesh, err := distributed.NewDeviceMesh([]int{devices}, []string{replicaAxis})
	require.NoError(t, err)
	shared, err := RNGStateFromSeed(3)
	require.NoError(t, err)

	// Two draws from the replica's state stand for the two passes of a SAM step.
	exec, err := NewExec(backend, func(shared, replica *Node) (*Node, *Node, *Node) {
		next, masks := replicaDropoutRNG(shared, replica)
		_, first := RandomUniform(masks, shapes.Make(dtypes.Float32, 64))
		_, second := RandomUniform(masks, shapes.Make(dtypes.Float32, 64))
		return next, first, second
	})
	require.NoError(t, err)
	exec.SPMD(mesh)
	args := make([]any, 0, 2*devices)
	for r := range devices {
		args = append(args, shared.Value(), int32(r))
	}
	outputs, err := exec.Exec(args...)
	require.NoError(t, err)
	require.Len(t, outputs, 3*devices)

	draws := make([][]float32, devices)
	for r := range devices {
		next, first, second := outputs[3*r], outputs[3*r+1], outputs[3*r+2]
		draws[r] = tensors.MustCopyFlatData[float32](first)
		assert.Equal(t, draws[r], tensors.MustCopyFlatData[float32](second), "replica %d: both passes draw the same masks", r)
		assert.Equal(t, outputs[0].Value(), next.Value(), "replica %d stores the same next state as replica 0", r)
		assert.NotEqual(t, shared.Value(), next.Value(), "replica %d: the next state differs from this step's", r)
	}
	for r := 1; r < devices; r++ {
		for s := range r {
			assert.NotEqual(t, draws[s], draws[r], "replicas %d and %d draw the same masks", s, r)
		}
	}
}

// TestDataParallelDropoutMasks checks the masks through the trainer. On a batch made of identical
// copies of one slice, every replica computes the same gradient unless the replicas' masks differ,
// and then a per-replica perturbation equals the synchronized one.
func TestDataParallelDropoutMasks(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles several XLA programs, about 15 s each on 2 cores")
	}
	const devices = 4
	backend := newCPUBackend(t, devices)
	b := repeatBatch(testBatch(4, 21), devices)

	stepVariables := func(dropout float64, perReplica bool) (map[string][]float32, StepResult) {
		cfg := parallelConfig(looksam.RuleSAM, 1, devices)
		cfg.Model.Dropout = dropout
		cfg.Optimizer.Rho = 0.5
		cfg.PerReplicaPerturbation = perReplica
		tr, err := NewTrainer(backend, cfg)
		require.NoError(t, err)
		result, err := tr.TrainStep(b)
		require.NoError(t, err)
		return floatVariables(t, tr), result
	}

	synchronized, _ := stepVariables(0, false)
	perReplica, _ := stepVariables(0, true)
	assertAllClose(t, synchronized, perReplica, 1e-7, 1e-5, "without dropout, replicas with equal slices agree")

	synchronized, result := stepVariables(0.2, false)
	perReplica, _ = stepVariables(0.2, true)
	differs := false
	for name, w := range synchronized {
		if !slices.Equal(w, perReplica[name]) {
			differs = true
		}
	}
	assert.True(t, differs, "with dropout, replicas with equal slices still draw different masks")
	assert.Less(t, result.Diagnostics["cos_theta"], 1.0, "rho > 0 moves g_s away from g")

	// rho = 0 makes w + eps = w, so g_s equals g exactly when both passes draw the same masks.
	cfg := parallelConfig(looksam.RuleSAM, 1, devices)
	cfg.Model.Dropout = 0.2
	cfg.Optimizer.Rho = 0
	tr, err := NewTrainer(backend, cfg)
	require.NoError(t, err)
	result, err = tr.TrainStep(b)
	require.NoError(t, err)
	assert.Equal(t, result.Diagnostics["grad_norm"], result.Diagnostics["perturbed_grad_norm"],
		"g and g_s of a SAM step with rho = 0 and dropout")
}

// TestPerReplicaPerturbationByHand runs one SAM step over SGD on 2 devices, where input x selects
// the coordinate of w that a replica's loss sees.
//
// Each replica's loss is the mean over its slice of 0.5 (x . w)^2, and the optimizer averages
// losses and gradients over the replicas. Replica 0 holds x = (1, 0), so its loss is 0.5 w1^2;
// replica 1 holds x = (0, 1), so its loss is 0.5 w2^2. With w = (1, 1), rho = 1, lr = 1, no
// momentum and no weight decay:
//
//	local g:  g_0 = (w1, 0) = (1, 0), g_1 = (0, w2) = (0, 1); mean g = (0.5, 0.5), |g| = 0.7071
//
//	per replica:  eps_0 = g_0 / |g_0| = (1, 0), so g_s,0 = (w1 + 1, 0) = (2, 0);
//	              eps_1 = (0, 1), so g_s,1 = (0, 2); mean g_s = (1, 1)
//	              w' = w - mean g_s = (0, 0); mean |eps_r| = 1
//
//	synchronized: eps = g / |g| = (1, 1) / sqrt 2 for both replicas, w + eps = (1.7071, 1.7071);
//	              g_s,0 = (1.7071, 0), g_s,1 = (0, 1.7071); mean g_s = (0.85355, 0.85355)
//	              w' = (1, 1) - 0.85355 = (0.14645, 0.14645); |eps| = 1
func TestPerReplicaPerturbationByHand(t *testing.T) {
	const devices = 2
	backend := newCPUBackend(t, devices)
	mesh, err := distributed.NewDeviceMesh([]int{devices}, []string{replicaAxis})
	require.NoError(t, err)
	half := 0.5 * (1 + 1/math.Sqrt2)

	tests := []struct {
		name            string
		perReplica      bool
		wantW           []float32
		wantPerturbedGs float64 // |mean g_s|
	}{
		{"per replica", true, []float32{0, 0}, math.Sqrt2},
		{"synchronized", false, []float32{float32(1 - half), float32(1 - half)}, half * math.Sqrt2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opt, err := looksam.New(looksam.Config{Rule: looksam.RuleSAM, Base: looksam.BaseSGD, Rho: 1})
			require.NoError(t, err)
			ctx := context.New()
			ctx.In("model").VariableWithValue("w", []float32{1, 1})
			exec, err := context.NewExec(spmdBackend{backend}, ctx, func(ctx *context.Context, x *Node) *Node {
				g := x.Graph()
				lossFn := func(ctx *context.Context) *Node {
					w := ctx.GetVariableByScopeAndName("/model", "w").ValueGraph(g)
					projection := ReduceSum(Mul(x, BroadcastToShape(ExpandAxes(w, 0), x.Shape())), -1) // [rows]
					return ReduceAllMean(MulScalar(Square(projection), 0.5))
				}
				opts := looksam.StepOptions{MeanAcrossReplicas: meanAcrossReplicas(devices), PerReplicaPerturbation: tt.perReplica}
				return opt.BuildStepWith(ctx, looksam.KindSAM, Scalar(g, dtypes.Float32, 1), lossFn, opts)
			})
			require.NoError(t, err)
			exec.SPMD(mesh)
			outputs, err := exec.Exec([][]float32{{1, 0}}, [][]float32{{0, 1}})
			require.NoError(t, err)
			require.Len(t, outputs, devices)

			diagnostics := map[string]float64{}
			for i, v := range tensors.MustCopyFlatData[float32](outputs[0]) {
				diagnostics[looksam.Diagnostics[i]] = float64(v)
			}
			assert.InDelta(t, 0.5, diagnostics["loss"], 1e-6, "loss: mean of 0.5 w1^2 and 0.5 w2^2")
			assert.InDelta(t, math.Sqrt(0.5), diagnostics["grad_norm"], 1e-6, "|mean g|")
			assert.InDelta(t, 1, diagnostics["perturbation_norm"], 1e-6, "mean |eps_r|")
			assert.InDelta(t, tt.wantPerturbedGs, diagnostics["perturbed_grad_norm"], 1e-6, "|mean g_s|")

			value, err := ctx.GetVariableByScopeAndName("/model", "w").DistributedValue()
			require.NoError(t, err)
			for r, shard := range value.Shards() {
				got := tensors.MustCopyFlatData[float32](shard)
				assert.InDeltaSlice(t, tt.wantW, got, 1e-6, "w after the step on replica %d", r)
			}
		})
	}
}

func TestDumpHLOCountsCollectives(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles several XLA programs, about 15 s each on 2 cores")
	}
	const devices = 4
	backend := newCPUBackend(t, devices)
	cfg := parallelConfig(looksam.RuleLookSAM, 2, devices)
	cfg.DumpHLODir = t.TempDir()
	tr, err := NewTrainer(backend, cfg)
	require.NoError(t, err)
	for step := range 2 {
		_, err := tr.TrainStep(testBatch(16, uint64(step)))
		require.NoError(t, err)
	}
	trainable := 0
	for v := range tr.Context().IterVariables() {
		if v.Trainable {
			trainable++
		}
	}

	programs, err := ReadStableHLODump(cfg.DumpHLODir)
	require.NoError(t, err)
	t.Logf("programs dumped: %v", sortedKeys(programs))
	sam, reuse := programs["train_step_sam_0"], programs["train_step_reuse_0"]
	require.NotEmpty(t, sam, "SAM program in %v", sortedKeys(programs))
	require.NotEmpty(t, reuse, "reuse program in %v", sortedKeys(programs))
	samOps, reuseOps := CountStableHLOOps(sam), CountStableHLOOps(reuse)
	t.Logf("%d trainable variables; SAM step: %d all_reduce, %d dot_general; reuse step: %d all_reduce, %d dot_general",
		trainable, samOps["all_reduce"], samOps["dot_general"], reuseOps["all_reduce"], reuseOps["dot_general"])

	// A SAM step averages the loss, g (one per variable), |eps| and g_s (one per variable), and
	// sums the correct count; a reuse step averages the loss and g and sums the count.
	assert.Equal(t, 2*trainable+3, samOps["all_reduce"], "all-reduces of the SAM step")
	assert.Equal(t, trainable+2, reuseOps["all_reduce"], "all-reduces of the reuse step")

	// Two forward and backward passes against one.
	ratio := float64(samOps["dot_general"]) / float64(reuseOps["dot_general"])
	assert.InDelta(t, 2, ratio, 0.1, "dot_general ops of the SAM step over those of the reuse step: %d / %d",
		samOps["dot_general"], reuseOps["dot_general"])
}

// BenchmarkLookSAMDevices times the steps of LookSAM-5 on the mnist-p7 model at batch 128 on the
// XLA CPU backend, with the batch on one device and split across 4 simulated devices. Compilation
// and a first step of each kind are left out. One op is a full cycle of 1 SAM and 4 reuse steps.
func BenchmarkLookSAMDevices(b *testing.B) {
	for _, devices := range []int{1, 4} {
		b.Run(fmt.Sprintf("devices=%d", devices), func(b *testing.B) {
			backend := newCPUBackend(b, devices)
			cfg := Config{
				Model:     vit.Presets["mnist-p7"],
				Optimizer: looksam.Config{Rule: looksam.RuleLookSAM, Base: looksam.BaseAdamW, Rho: 0.05, Alpha: 0.7, K: 5, WeightDecay: 0.05},
				Schedule:  Schedule{Peak: 1e-3, Warmup: 10, Total: 1000, Decay: "cosine"},
				Seed:      1,
				BatchSize: 128,
				Devices:   devices,
			}
			tr, err := NewTrainer(backend, cfg)
			require.NoError(b, err)
			batch := testBatch(128, 1)
			for range 5 {
				_, err := tr.TrainStep(batch)
				require.NoError(b, err)
			}
			var samTime, reuseTime time.Duration
			b.ResetTimer()
			for range b.N {
				for range 5 {
					result, err := tr.TrainStep(batch)
					require.NoError(b, err)
					if result.Kind == looksam.KindSAM {
						samTime += result.Duration
					} else {
						reuseTime += result.Duration
					}
				}
			}
			b.ReportMetric(float64(samTime.Milliseconds())/float64(b.N), "ms/sam-step")
			b.ReportMetric(float64(reuseTime.Milliseconds())/float64(4*b.N), "ms/reuse-step")
		})
	}
}
