package looksam

import (
	"fmt"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/backends"
	_ "github.com/gomlx/gomlx/backends/simplego"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:staticcheck
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/janpfeifer/must"
	"github.com/looksam/vitsam/pjrt"
	"github.com/stretchr/testify/require"
)

// problem is a loss over named parameter tensors, built as a graph from the parameter nodes.
type problem struct {
	dtype  dtypes.DType
	params map[string][]float64 // initial values of /model:<name>, each a vector
	order  []string
	loss   func(w map[string]*Node) *Node
}

// harness runs steps of an Optimizer on a problem, with one compiled program per step kind.
type harness struct {
	t        testing.TB
	opt      *Optimizer
	ctx      *context.Context
	programs map[StepKind]*context.Exec
	builds   map[StepKind]int // how many times each program's graph was built
	lossFns  map[StepKind]int // how many times the loss was built, per kind
	step     int64
}

// testBackendEnv names the environment variable that selects the backend of these tests, in
// cmd/train's -backend syntax ("xla:cpu", for example). The pure-Go backend is the default.
const testBackendEnv = "VITSAM_TEST_BACKEND"

var testBackend = func() backends.Backend {
	config := os.Getenv(testBackendEnv)
	if config == "" {
		return must.M1(backends.NewWithConfig("go"))
	}
	b, choice, err := pjrt.Select(config)
	if err != nil {
		panic(fmt.Sprintf("%s=%q: %v", testBackendEnv, config, err))
	}
	fmt.Println(choice)
	return b
}()

func newHarness(t testing.TB, cfg Config, p problem) *harness {
	t.Helper()
	opt, err := New(cfg)
	require.NoError(t, err)
	ctx := context.New()
	for _, name := range p.order {
		values := p.params[name]
		var value *tensors.Tensor
		switch p.dtype {
		case dtypes.Float64:
			value = tensors.FromValue(values)
		default:
			value = tensors.FromFlatDataAndDimensions(toFloat32(values), len(values))
			if p.dtype != dtypes.Float32 {
				value = convertTensor(t, value, p.dtype)
			}
		}
		ctx.In("model").VariableWithValue(name, value)
	}
	h := &harness{t: t, opt: opt, ctx: ctx, programs: map[StepKind]*context.Exec{},
		builds: map[StepKind]int{}, lossFns: map[StepKind]int{}}
	for _, kind := range opt.Kinds() {
		kind := kind
		h.programs[kind] = context.MustNewExec(testBackend, ctx, func(ctx *context.Context, lr *Node) *Node {
			h.builds[kind]++
			return opt.BuildStep(ctx, kind, lr, func(ctx *context.Context) *Node {
				h.lossFns[kind]++
				w := map[string]*Node{}
				for _, name := range p.order {
					w[name] = ctx.In("model").GetVariableByScopeAndName("/model", name).ValueGraph(lr.Graph())
				}
				return p.loss(w)
			})
		})
	}
	return h
}

// run executes one step with learning rate lr and returns the diagnostics by name.
func (h *harness) run(lr float64) map[string]float64 {
	h.t.Helper()
	kind := h.opt.Kind(h.step)
	out := h.programs[kind].MustExec1(float32(lr))
	values := tensors.MustCopyFlatData[float32](out)
	h.step++
	diag := map[string]float64{}
	for i, name := range Diagnostics {
		diag[name] = float64(values[i])
	}
	return diag
}

// value returns a variable's value as float64.
func (h *harness) value(scope, name string) []float64 {
	h.t.Helper()
	v := h.ctx.GetVariableByScopeAndName(scope, name)
	require.NotNil(h.t, v, "variable %s:%s not found", scope, name)
	t := v.MustValue()
	return tensorToFloat64(h.t, t)
}

func (h *harness) weights(name string) []float64 { return h.value("/model", name) }

func tensorToFloat64(t testing.TB, tensor *tensors.Tensor) []float64 {
	t.Helper()
	if tensor.DType() != dtypes.Float64 && tensor.DType() != dtypes.Float32 {
		tensor = convertTensor(t, tensor, dtypes.Float64)
	}
	switch tensor.DType() {
	case dtypes.Float64:
		return tensors.MustCopyFlatData[float64](tensor)
	default:
		f := tensors.MustCopyFlatData[float32](tensor)
		out := make([]float64, len(f))
		for i, v := range f {
			out[i] = float64(v)
		}
		return out
	}
}

func convertTensor(t testing.TB, x *tensors.Tensor, dtype dtypes.DType) *tensors.Tensor {
	t.Helper()
	return MustExecOnce(testBackend, func(x *Node) *Node { return ConvertDType(x, dtype) }, x)
}

func toFloat32(x []float64) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(v)
	}
	return out
}

// assertClose checks got against want element-wise within a relative tolerance (absolute near 0).
func assertClose(t testing.TB, want, got []float64, tolerance float64, msg string) {
	t.Helper()
	require.Len(t, got, len(want), msg)
	for i := range want {
		diff := math.Abs(got[i] - want[i])
		scale := math.Max(1, math.Abs(want[i]))
		if !(diff <= tolerance*scale) {
			t.Errorf("%s: element %d: got %.9g, want %.9g (|diff| %.3g > %.3g)", msg, i, got[i], want[i], diff, tolerance*scale)
		}
	}
}

// supportsDType reports whether the test backend computes in dtype; the pure-Go backend of GoMLX
// v0.26.0 has bfloat16 but no float16.
func supportsDType(dtype dtypes.DType) bool {
	return !(dtype == dtypes.Float16 && strings.Contains(testBackend.Name(), "(go)"))
}
