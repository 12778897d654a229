package main

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseFlagsErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown dataset", []string{"-dataset", "imagenet"}, `invalid -dataset "imagenet": use fashion-mnist, mnist, cifar10, cifar100, folder`},
		{"bad split", []string{"-split", "val"}, `invalid -split "val": use train or test`},
		{"cifar without dir", []string{"-dataset", "cifar10"}, "missing -data-dir: -dataset cifar10 needs"},
		{"folder without dir", []string{"-dataset", "folder"}, "missing -data-dir: -dataset folder needs"},
		{"grid not png", []string{"-grid", "out.jpg"}, `invalid -grid "out.jpg"`},
		{"grid size zero", []string{"-grid-size", "0"}, "invalid -grid-size 0: it must be 1 to 32"},
		{"grid size large", []string{"-grid-size", "33"}, "invalid -grid-size 33"},
		{"negative workers", []string{"-workers", "-2"}, "invalid -workers -2"},
		{"zero size", []string{"-dataset", "folder", "-data-dir", "d", "-size", "0"}, "invalid -size 0"},
		{"size for cifar", []string{"-dataset", "cifar10", "-data-dir", "d", "-size", "64"}, "-size applies only to -dataset folder, not cifar10"},
		{"labels for cifar10", []string{"-dataset", "cifar10", "-data-dir", "d", "-cifar100-labels", "coarse"},
			"-cifar100-labels applies only to -dataset cifar100"},
		{"bad labels", []string{"-dataset", "cifar100", "-data-dir", "d", "-cifar100-labels", "medium"}, `invalid -cifar100-labels "medium"`},
		{"skip for mnist", []string{"-dataset", "mnist", "-skip-undecodable"}, "-skip-undecodable applies only to -dataset folder"},
		{"positional argument", []string{"extra"}, `unexpected arguments ["extra"]`},
		{"undefined flag", []string{"-batch", "3"}, "flag provided but not defined: -batch"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			_, err := parseFlags(test.args, io.Discard)
			require.Error(t, err)
			assert.Contains(t, err.Error(), test.want)
		})
	}
}

func TestParseFlagsDefaults(t *testing.T) {
	c, err := parseFlags(nil, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, &config{dataset: "fashion-mnist", split: "train", gridSize: 8, seed: 1, size: 224,
		cifar100Labels: "fine", sizeSample: 256}, c)
}

// cifar10Record returns a CIFAR-10 record with the given label whose pixels all have the colour
// (r, g, b).
func cifar10Record(label, r, g, b byte) []byte {
	record := []byte{label}
	for _, v := range []byte{r, g, b} {
		record = append(record, bytes.Repeat([]byte{v}, 1024)...)
	}
	return record
}

// writeCIFAR10 writes the six CIFAR-10 files into dir/cifar-10-batches-bin: train batch k holds
// one example of class k-1 and one of class 9, and the test batch one of class 3.
func writeCIFAR10(t *testing.T, dir string) {
	t.Helper()
	bin := filepath.Join(dir, "cifar-10-batches-bin")
	require.NoError(t, os.MkdirAll(bin, 0o755))
	for k := 1; k <= 5; k++ {
		data := append(cifar10Record(byte(k-1), 255, 0, 0), cifar10Record(9, 0, 0, 255)...)
		require.NoError(t, os.WriteFile(filepath.Join(bin, fmt.Sprintf("data_batch_%d.bin", k)), data, 0o644))
	}
	require.NoError(t, os.WriteFile(filepath.Join(bin, "test_batch.bin"), cifar10Record(3, 0, 255, 0), 0o644))
}

func TestRunCIFAR10(t *testing.T) {
	dir := t.TempDir()
	writeCIFAR10(t, dir)
	grid := filepath.Join(t.TempDir(), "grid.png")
	c, err := parseFlags([]string{"-dataset", "cifar10", "-data-dir", dir, "-grid", grid, "-grid-size", "3", "-augment"}, io.Discard)
	require.NoError(t, err)
	var out bytes.Buffer
	require.NoError(t, run(c, &out))

	text := out.String()
	assert.Contains(t, text, "image size (height x width x channels): 32x32x3")
	assert.Contains(t, text, "train: 10 examples")
	assert.Contains(t, text, "test: 1 examples")
	assert.Contains(t, text, "classes: 10")
	lines := strings.Split(text, "\n")
	assert.Contains(t, lines, "      9       truck      5     0", "row of class 9 in:\n%s", text)
	assert.Contains(t, lines, "      3         cat      1     1", "row of class 3 in:\n%s", text)
	assert.Contains(t, text, "9 images of 32x32 in 3 columns")

	// Cells of 32x32 images enlarged twice, 2 grey pixels apart: 3*(64+2)+2 = 200 pixels.
	f, err := os.Open(grid)
	require.NoError(t, err)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err)
	assert.Equal(t, image.Rect(0, 0, 200, 200), img.Bounds())
	assert.Equal(t, color.RGBA{R: 128, G: 128, B: 128, A: 255}, color.RGBAModel.Convert(img.At(0, 0)), "gap")
	// Pixel (32, 32) of each cell is inside the image whatever the crop, so it is red or blue.
	for k := range 9 {
		x, y := 2+(k%3)*66+32, 2+(k/3)*66+32
		r, g, b, _ := img.At(x, y).RGBA()
		assert.True(t, g == 0 && (r == 0xffff) != (b == 0xffff), "cell %d centre is red or blue: %d %d %d", k, r, g, b)
	}
}

func TestRunFolder(t *testing.T) {
	root := t.TempDir()
	for i, class := range []string{"b", "a", "b"} {
		img := image.NewRGBA(image.Rect(0, 0, 40, 30))
		for p := 0; p < len(img.Pix); p += 4 {
			img.Pix[p], img.Pix[p+1], img.Pix[p+2], img.Pix[p+3] = 0, 200, 0, 255
		}
		dir := filepath.Join(root, "train", class)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		var buf bytes.Buffer
		require.NoError(t, png.Encode(&buf, img))
		require.NoError(t, os.WriteFile(filepath.Join(dir, fmt.Sprintf("%d.png", i)), buf.Bytes(), 0o644))
	}
	require.NoError(t, os.WriteFile(filepath.Join(root, "train", "a", "bad.jpg"), []byte("garbage"), 0o644))

	grid := filepath.Join(t.TempDir(), "grid.png")
	args := []string{"-dataset", "folder", "-data-dir", root, "-size", "16", "-grid", grid, "-grid-size", "2", "-augment"}
	c, err := parseFlags(args, io.Discard)
	require.NoError(t, err)
	err = run(c, io.Discard)
	require.Error(t, err, "the undecodable file stops the run by default")
	assert.Contains(t, err.Error(), filepath.Join(root, "train", "a", "bad.jpg"))

	c, err = parseFlags(append(args, "-skip-undecodable"), io.Discard)
	require.NoError(t, err)
	var out bytes.Buffer
	require.NoError(t, run(c, &out))
	text := out.String()
	assert.Contains(t, text, "16x16x3 after the random resized crop and flip")
	assert.Contains(t, text, "train: 4 examples")
	assert.Contains(t, text, "test: image folder split "+filepath.Join(root, "val")+" not found")
	assert.Contains(t, text, "width min 40, median 40, max 40")
	assert.Contains(t, text, "1 files with undecodable headers")
	assert.Contains(t, text, "4 images of 16x16 in 2 columns")
	assert.Contains(t, text, "skipped 1 undecodable files")
	_, err = os.Stat(grid)
	assert.NoError(t, err, "grid written")

	c, err = parseFlags([]string{"-dataset", "folder", "-data-dir", root, "-split", "test"}, io.Discard)
	require.NoError(t, err)
	err = run(c, io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join(root, "val")+" not found")
}
