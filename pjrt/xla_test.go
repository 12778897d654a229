//go:build cgo && !noxla

package pjrt

import (
	"bytes"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/backends/simplego"
	"github.com/gomlx/gomlx/backends/xla"
	"github.com/gomlx/gomlx/pkg/core/distributed"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// installedCPUPlugin returns the CPU plugin that the default search finds on this machine, or
// skips the test.
func installedCPUPlugin(t *testing.T) Plugin {
	t.Helper()
	discovery, err := FindPlugins(SearchOptions{Plugin: PlatformCPU})
	if err != nil {
		t.Skipf("skipping: no CPU PJRT plugin is installed, so XLA cannot be tried (`make xla-cpu` installs one).\n%v", err)
	}
	plugin, _ := discovery.Best()
	return plugin
}

// selectCPUPlugin creates an XLA backend on plugin with XLA_FLAGS set to xlaFlags.
func selectCPUPlugin(t *testing.T, plugin Plugin, xlaFlags string, deviceCount int) (backends.Backend, *Choice) {
	t.Helper()
	backend, choice, err := SelectWith("xla:"+plugin.Path, Options{
		Search:         SearchOptions{LookupEnv: envMap(map[string]string{"XLA_FLAGS": xlaFlags})},
		CPUDeviceCount: deviceCount,
	})
	require.NoError(t, err)
	t.Cleanup(backend.Finalize)
	return backend, choice
}

func TestXLADescribesChoice(t *testing.T) {
	plugin := installedCPUPlugin(t)
	_, choice := selectCPUPlugin(t, plugin, "", 0)

	assert.Equal(t, xla.BackendName, choice.Backend)
	assert.Equal(t, "xla:"+plugin.Path+",shared_buffers", choice.Config)
	require.NotNil(t, choice.Plugin)
	assert.Equal(t, plugin.Path, choice.Plugin.Path)
	assert.True(t, strings.HasPrefix(choice.PluginAPIVersion, "0."), "got PJRT C API version %q, want 0.x", choice.PluginAPIVersion)
	assert.NotEmpty(t, choice.Devices)
	assert.Contains(t, choice.String(), "PJRT C API "+choice.PluginAPIVersion)
	t.Logf("%s", choice)
}

func TestXLADeviceCount(t *testing.T) {
	plugin := installedCPUPlugin(t)
	tests := []struct {
		name        string
		xlaFlags    string
		deviceCount int
		want        int
	}{
		{"from XLA_FLAGS", "--xla_force_host_platform_device_count=3", 0, 3},
		{"option wins over XLA_FLAGS", "--xla_force_host_platform_device_count=3", 2, 2},
		{"one device", "", 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			backend, choice := selectCPUPlugin(t, plugin, tt.xlaFlags, tt.deviceCount)
			assert.Equal(t, tt.want, backend.NumDevices())
			assert.Len(t, choice.Devices, tt.want)
			assert.Empty(t, choice.Notes)

			var out bytes.Buffer
			require.NoError(t, ListDevices(&out, backend))
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			assert.Len(t, lines, 1+tt.want, "got output %q", out.String())
			assert.True(t, strings.HasPrefix(lines[len(lines)-1], "device "), "got last line %q", lines[len(lines)-1])
		})
	}
}

// newSequentialGoBackend returns a pure-Go backend that runs one op at a time. GoMLX v0.26.0's
// parallel op execution reads a use counter without its lock (backends/simplego/exec.go), which
// fails `go test -race` when a graph has independent ops.
func newSequentialGoBackend(t *testing.T) backends.Backend {
	t.Helper()
	backend, err := simplego.New("ops_sequential")
	require.NoError(t, err)
	t.Cleanup(backend.Finalize)
	return backend
}

// tinyGraph returns x + y, x·y and the gradient of sum((x·y)²) with respect to x.
func tinyGraph(x, y *Node) (*Node, *Node, *Node) {
	sum := Add(x, y)
	product := MatMul(x, y)
	loss := ReduceAllSum(Mul(product, product))
	return sum, product, Gradient(loss, x)[0]
}

func TestXLAMatchesGoOnTinyGraph(t *testing.T) {
	plugin := installedCPUPlugin(t)
	xlaBackend, _ := selectCPUPlugin(t, plugin, "", 1)
	goBackend := newSequentialGoBackend(t)

	x := [][]float32{{1, 2}, {3, 4}}
	y := [][]float32{{5, 6}, {7, 8}}
	// By hand: x·y = [[1·5+2·7, 1·6+2·8], [3·5+4·7, 3·6+4·8]], and the gradient of
	// sum((x·y)²) is 2 (x·y) yᵀ = 2 [[19·5+22·6, 19·7+22·8], [43·5+50·6, 43·7+50·8]].
	want := [][][]float32{
		{{6, 8}, {10, 12}},
		{{19, 22}, {43, 50}},
		{{454, 618}, {1030, 1402}},
	}
	names := []string{"x + y", "x·y", "gradient"}

	for _, backend := range []backends.Backend{xlaBackend, goBackend} {
		outputs := MustExecOnceN(backend, tinyGraph, x, y)
		require.Len(t, outputs, 3)
		for i, output := range outputs {
			got := output.Value().([][]float32)
			assert.Equal(t, want[i], got, "%s on %s", names[i], backend.Name())
		}
	}
}

func TestXLAMatchesFloat64Reference(t *testing.T) {
	plugin := installedCPUPlugin(t)
	xlaBackend, _ := selectCPUPlugin(t, plugin, "", 1)
	goBackend := newSequentialGoBackend(t)

	// tanh(a·b) for random 24x40 and 40x16 matrices.
	const rows, inner, cols = 24, 40, 16
	random := rand.New(rand.NewPCG(1, 2))
	a := make([][]float32, rows)
	for i := range a {
		a[i] = make([]float32, inner)
		for k := range a[i] {
			a[i][k] = float32(random.NormFloat64() * 0.3)
		}
	}
	b := make([][]float32, inner)
	for k := range b {
		b[k] = make([]float32, cols)
		for j := range b[k] {
			b[k][j] = float32(random.NormFloat64() * 0.3)
		}
	}
	want := make([][]float64, rows)
	for i := range want {
		want[i] = make([]float64, cols)
		for j := range want[i] {
			var dot float64
			for k := range inner {
				dot += float64(a[i][k]) * float64(b[k][j])
			}
			want[i][j] = math.Tanh(dot)
		}
	}

	const tolerance = 1e-5
	for _, backend := range []backends.Backend{xlaBackend, goBackend} {
		output := MustExecOnce(backend, func(a, b *Node) *Node { return Tanh(MatMul(a, b)) }, a, b)
		got := output.Value().([][]float32)
		require.Len(t, got, rows)
		for i := range want {
			for j := range want[i] {
				assert.InDeltaf(t, want[i][j], float64(got[i][j]), tolerance,
					"tanh(a·b)[%d][%d] on %s: got %g, want %g", i, j, backend.Name(), got[i][j], want[i][j])
			}
		}
	}
}

func TestXLAAllReduceAcrossCPUDevices(t *testing.T) {
	plugin := installedCPUPlugin(t)
	const numDevices = 4
	backend, _ := selectCPUPlugin(t, plugin, "", numDevices)

	mesh, err := distributed.NewDeviceMesh([]int{numDevices}, []string{"replica"})
	require.NoError(t, err)
	g := NewGraph(backend, "all_reduce")
	require.NoError(t, g.SetSPMD(mesh))
	x := Parameter(g, "x", shapes.Make(dtypes.Float32, 2))
	g.Compile(g.Distributed().AllReduceOne(x, backends.ReduceOpSum))

	// Device i holds [i, 10 i], so every device gets [0+1+2+3, 0+10+20+30].
	inputs := make([]any, numDevices)
	for i := range inputs {
		inputs[i] = []float32{float32(i), float32(10 * i)}
	}
	outputs := g.Run(inputs...)
	require.Len(t, outputs, numDevices)
	for i, output := range outputs {
		assert.Equal(t, []float32{6, 60}, output.Value(), "sum on device %d", i)
	}
}
