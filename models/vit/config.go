// Package vit builds a Vision Transformer (Dosovitskiy et al. 2020, arXiv:2010.11929) as a GoMLX
// computation graph.
//
// The model runs on every GoMLX backend, including the pure-Go one, which in GoMLX v0.26.0 cannot
// differentiate Slice or Convolution. So the patch embedding is a reshape and transpose followed by
// a dense projection (the same linear map as a stride-p convolution), and the class token is read
// out with a contraction against a one-hot vector instead of a slice.
package vit

import (
	"fmt"
	"sort"
	"strings"
)

// Pooling selects how the token sequence becomes one vector for the classifier head.
type Pooling string

const (
	// PoolClassToken prepends a learned class token and classifies its final state, as in the
	// original ViT.
	PoolClassToken Pooling = "token"
	// PoolMean classifies the mean of the patch tokens (global average pooling), which trains
	// faster from scratch on small images.
	PoolMean Pooling = "mean"
)

// Config is the architecture of a Vision Transformer.
type Config struct {
	ImageSize        int     // Height and width of the square input image, in pixels.
	Channels         int     // Colour channels of the input (1 for MNIST, 3 for RGB).
	PatchSize        int     // Side of the square patches; ImageSize must be a multiple of it.
	Hidden           int     // Width of the token embeddings (D in the ViT paper).
	Depth            int     // Number of encoder blocks (L).
	Heads            int     // Attention heads per block; Hidden must be a multiple of it.
	MLPSize          int     // Width of the hidden layer of each block's MLP.
	Classes          int     // Number of output classes.
	Dropout          float64 // Dropout rate after the embedding, the attention output and each MLP layer.
	Pool             Pooling // Pooling of the tokens into the classifier input.
	LayerNormEpsilon float64 // Epsilon added to the variance in each LayerNorm.
}

// NumPatches returns the number of patch tokens of one image.
func (c Config) NumPatches() int {
	side := c.ImageSize / c.PatchSize
	return side * side
}

// NumTokens returns the sequence length seen by the encoder: the patches plus the class token when
// Pool is PoolClassToken.
func (c Config) NumTokens() int {
	if c.Pool == PoolClassToken {
		return c.NumPatches() + 1
	}
	return c.NumPatches()
}

// NumParams returns the number of trainable scalars of the model, computed from the configuration.
func (c Config) NumParams() int {
	patchDim := c.PatchSize * c.PatchSize * c.Channels
	n := patchDim*c.Hidden + c.Hidden // patch projection
	n += c.NumTokens() * c.Hidden     // position embedding
	if c.Pool == PoolClassToken {
		n += c.Hidden
	}
	perBlock := 2*2*c.Hidden + // two LayerNorms
		4*(c.Hidden*c.Hidden+c.Hidden) + // q, k, v and output projections
		c.Hidden*c.MLPSize + c.MLPSize + c.MLPSize*c.Hidden + c.Hidden // MLP
	n += c.Depth * perBlock
	n += 2 * c.Hidden                   // final LayerNorm
	n += c.Hidden*c.Classes + c.Classes // head
	return n
}

// Validate returns an error naming the first invalid field.
func (c Config) Validate() error {
	positive := []struct {
		name  string
		value int
	}{
		{"ImageSize", c.ImageSize}, {"Channels", c.Channels}, {"PatchSize", c.PatchSize},
		{"Hidden", c.Hidden}, {"Depth", c.Depth}, {"Heads", c.Heads}, {"MLPSize", c.MLPSize},
		{"Classes", c.Classes},
	}
	for _, p := range positive {
		if p.value < 1 {
			return fmt.Errorf("vit: invalid %s=%d: it must be at least 1", p.name, p.value)
		}
	}
	if c.ImageSize%c.PatchSize != 0 {
		return fmt.Errorf("vit: invalid PatchSize=%d: ImageSize=%d must be a multiple of it", c.PatchSize, c.ImageSize)
	}
	if c.Hidden%c.Heads != 0 {
		return fmt.Errorf("vit: invalid Heads=%d: Hidden=%d must be a multiple of it", c.Heads, c.Hidden)
	}
	if c.Dropout < 0 || c.Dropout >= 1 {
		return fmt.Errorf("vit: invalid Dropout=%g: it must be in [0, 1)", c.Dropout)
	}
	if c.Pool != PoolClassToken && c.Pool != PoolMean {
		return fmt.Errorf("vit: invalid Pool=%q: use %q or %q", c.Pool, PoolClassToken, PoolMean)
	}
	if c.LayerNormEpsilon <= 0 {
		return fmt.Errorf("vit: invalid LayerNormEpsilon=%g: it must be positive", c.LayerNormEpsilon)
	}
	return nil
}

// imageNet returns a 224x224 RGB, 1000-class configuration of the given width, as in Table 1 of
// the ViT paper (arXiv:2010.11929) and Table 9 of the LookSAM paper (arXiv:2203.02714).
func imageNet(patch, hidden, depth, heads, mlp int) Config {
	return Config{
		ImageSize: 224, Channels: 3, PatchSize: patch, Hidden: hidden, Depth: depth, Heads: heads,
		MLPSize: mlp, Classes: 1000, Dropout: 0, Pool: PoolClassToken, LayerNormEpsilon: 1e-6,
	}
}

// mnist returns a 28x28 greyscale, 10-class configuration sized for a CPU.
func mnist(patch, hidden, depth, heads, mlp int) Config {
	return Config{
		ImageSize: 28, Channels: 1, PatchSize: patch, Hidden: hidden, Depth: depth, Heads: heads,
		MLPSize: mlp, Classes: 10, Dropout: 0, Pool: PoolMean, LayerNormEpsilon: 1e-6,
	}
}

// cifar returns a 32x32 RGB configuration with the given number of classes, sized for a CPU.
func cifar(classes, patch, hidden, depth, heads, mlp int) Config {
	return Config{
		ImageSize: 32, Channels: 3, PatchSize: patch, Hidden: hidden, Depth: depth, Heads: heads,
		MLPSize: mlp, Classes: classes, Dropout: 0, Pool: PoolMean, LayerNormEpsilon: 1e-6,
	}
}

// Presets are the named model configurations. The Ti, S and B sizes are those of the ViT and DeiT
// papers at patch 16 and 32 for 224x224 ImageNet input. The "mnist-*" presets take 28x28 greyscale
// input and the "cifar*" presets 32x32 RGB input; both are sized so that a training step fits a
// 2-core CPU.
var Presets = map[string]Config{
	"ti16": imageNet(16, 192, 12, 3, 768),
	"ti32": imageNet(32, 192, 12, 3, 768),
	"s16":  imageNet(16, 384, 12, 6, 1536),
	"s32":  imageNet(32, 384, 12, 6, 1536),
	"b16":  imageNet(16, 768, 12, 12, 3072),
	"b32":  imageNet(32, 768, 12, 12, 3072),

	// 49 tokens of 4x4 pixels: hidden 64, 4 blocks, 4 heads, MLP 256.
	"mnist-p4": mnist(4, 64, 4, 4, 256),
	// 16 tokens of 7x7 pixels, same width: the default CPU model, about 4x cheaper than mnist-p4.
	"mnist-p7": mnist(7, 64, 4, 4, 256),
	// The smallest model, for unit tests and smoke runs: 16 tokens, hidden 32, 2 blocks.
	"mnist-tiny": mnist(7, 32, 2, 2, 64),

	// CIFAR-10 and CIFAR-100: 64 tokens of 4x4 pixels, hidden 128, 6 blocks, 4 heads, MLP 256.
	"cifar10-p4":  cifar(10, 4, 128, 6, 4, 256),
	"cifar100-p4": cifar(100, 4, 128, 6, 4, 256),
	// The smallest 32x32 model, for unit tests and smoke runs: 16 tokens of 8x8 pixels.
	"cifar10-tiny": cifar(10, 8, 32, 2, 2, 64),
}

// DefaultPreset is the preset that cmd/train uses when none is given.
const DefaultPreset = "mnist-p7"

// PresetNames returns the preset names in sorted order.
func PresetNames() []string {
	names := make([]string, 0, len(Presets))
	for name := range Presets {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Preset returns the named configuration, or an error that lists the valid names.
func Preset(name string) (Config, error) {
	c, ok := Presets[name]
	if !ok {
		return Config{}, fmt.Errorf("vit: unknown model preset %q: use one of %s", name, strings.Join(PresetNames(), ", "))
	}
	return c, nil
}

// NoDecayNames are the variable names that, by convention, are excluded from weight decay and from
// LAMB's layer adaptation: biases, LayerNorm scales and offsets, the class token and the position
// embedding.
var NoDecayNames = []string{"bias", "scale", "offset", "cls_token", "pos_embedding"}
