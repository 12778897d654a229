package vit

import (
	"math"
	"testing"

	"github.com/gomlx/gomlx/backends"
	_ "github.com/gomlx/gomlx/backends/simplego"
	"github.com/gomlx/gomlx/pkg/core/dtypes"
	. "github.com/gomlx/gomlx/pkg/core/graph" //nolint:staticcheck
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newBackend(t testing.TB) backends.Backend {
	t.Helper()
	b, err := backends.NewWithConfig("go")
	require.NoError(t, err)
	return b
}

func TestPresetsValid(t *testing.T) {
	for _, name := range PresetNames() {
		cfg, err := Preset(name)
		require.NoError(t, err, name)
		assert.NoError(t, cfg.Validate(), name)
	}
	_, err := Preset("vit-huge")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"vit-huge"`)
	assert.Contains(t, err.Error(), "mnist-p7")
}

func TestPresetParamCounts(t *testing.T) {
	// Published sizes: ViT-B/16 86.6M (ViT paper, Table 1 rounds to 86M), ViT-S/16 22.1M, ViT-Ti/16 5.7M (DeiT paper).
	cases := []struct {
		name string
		want float64 // millions
	}{{"b16", 86.57}, {"s16", 22.05}, {"ti16", 5.72}}
	for _, c := range cases {
		got := float64(Presets[c.name].NumParams()) / 1e6
		assert.InDelta(t, c.want, got, 0.02, "%s: got %.3fM parameters, want %.2fM", c.name, got, c.want)
	}
}

func TestValidateRejects(t *testing.T) {
	base := Presets["mnist-tiny"]
	cases := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"patch does not divide image", func(c *Config) { c.PatchSize = 5 }, "PatchSize=5"},
		{"heads do not divide hidden", func(c *Config) { c.Heads = 3 }, "Heads=3"},
		{"zero depth", func(c *Config) { c.Depth = 0 }, "Depth=0"},
		{"dropout one", func(c *Config) { c.Dropout = 1 }, "Dropout=1"},
		{"unknown pooling", func(c *Config) { c.Pool = "max" }, `Pool="max"`},
	}
	for _, c := range cases {
		cfg := base
		c.mutate(&cfg)
		err := cfg.Validate()
		require.Error(t, err, c.name)
		assert.Contains(t, err.Error(), c.want, c.name)
	}
}

func TestPatchifyOrder(t *testing.T) {
	backend := newBackend(t)
	// One 4x4 image with 1 channel, pixel value = 10*row + column, patches of 2x2.
	img := make([]float32, 16)
	for r := range 4 {
		for c := range 4 {
			img[r*4+c] = float32(10*r + c)
		}
	}
	got := MustExecOnce(backend, func(x *Node) *Node { return patchify(x, 2) },
		tensors.FromFlatDataAndDimensions(img, 1, 4, 4, 1))
	want := [][][]float32{{
		{0, 1, 10, 11}, {2, 3, 12, 13},
		{20, 21, 30, 31}, {22, 23, 32, 33},
	}}
	assert.Equal(t, want, got.Value())
}

func TestLogitsShapesAndParams(t *testing.T) {
	backend := newBackend(t)
	for _, pool := range []Pooling{PoolMean, PoolClassToken} {
		cfg := Presets["mnist-tiny"]
		cfg.Pool = pool
		model, err := New(cfg, 7)
		require.NoError(t, err)
		ctx := context.New()
		exec := context.MustNewExec(backend, ctx, func(ctx *context.Context, images *Node) *Node {
			logits, _ := model.Logits(ctx, images, false, nil)
			return logits
		})
		images := tensors.FromShape(shapes.Make(dtypes.Float32, 3, 28, 28, 1))
		logits := exec.MustExec1(images)
		assert.Equal(t, []int{3, 10}, logits.Shape().Dimensions, "pool=%s", pool)
		assert.Equal(t, cfg.NumParams(), ctx.NumParameters(), "pool=%s", pool)
	}
}

func TestInitDeterministic(t *testing.T) {
	backend := newBackend(t)
	values := func(seed uint64) []float32 {
		model, err := New(Presets["mnist-tiny"], seed)
		require.NoError(t, err)
		ctx := context.New()
		exec := context.MustNewExec(backend, ctx, func(ctx *context.Context, images *Node) *Node {
			logits, _ := model.Logits(ctx, images, false, nil)
			return logits
		})
		exec.MustExec1(tensors.FromShape(shapes.Make(dtypes.Float32, 1, 28, 28, 1)))
		v := ctx.GetVariableByScopeAndName("/block_00/mlp_in", "weights")
		require.NotNil(t, v)
		return tensors.MustCopyFlatData[float32](v.MustValue())
	}
	a, b, c := values(1), values(1), values(2)
	assert.Equal(t, a, b, "same seed must give the same weights")
	assert.NotEqual(t, a, c, "different seeds must give different weights")
	limit := math.Sqrt(6.0 / (32 + 64))
	for _, v := range a {
		require.LessOrEqual(t, math.Abs(float64(v)), limit)
	}
}

func TestGradientOnGoBackend(t *testing.T) {
	backend := newBackend(t)
	for _, pool := range []Pooling{PoolMean, PoolClassToken} {
		cfg := Presets["mnist-tiny"]
		cfg.Pool = pool
		cfg.Dropout = 0.1
		model, err := New(cfg, 3)
		require.NoError(t, err)
		ctx := context.New()
		exec := context.MustNewExec(backend, ctx, func(ctx *context.Context, images *Node) *Node {
			rng := RNGStateFromSeedForGraph(images.Graph(), 5)
			logits, _ := model.Logits(ctx, images, true, rng)
			// The head starts at zero, so a loss linear in the logits still has a non-zero gradient.
			loss := ReduceAllSum(Mul(logits, OnesLike(logits)))
			grads := ctx.BuildTrainableVariablesGradientsGraph(loss)
			total := ScalarZero(images.Graph(), loss.DType())
			for _, g := range grads {
				total = Add(total, ReduceAllSum(Square(g)))
			}
			return total
		})
		img := make([]float32, 2*28*28)
		for i := range img {
			img[i] = float32(i%17) / 17
		}
		got := exec.MustExec1(tensors.FromFlatDataAndDimensions(img, 2, 28, 28, 1))
		norm := tensors.ToScalar[float32](got)
		assert.False(t, math.IsNaN(float64(norm)) || math.IsInf(float64(norm), 0), "pool=%s: gradient norm %v", pool, norm)
		assert.Greater(t, norm, float32(0), "pool=%s", pool)
	}
}
