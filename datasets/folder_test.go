package datasets

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// uniformImage returns a w x h RGBA image of one colour.
func uniformImage(w, h int, c color.RGBA) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.SetRGBA(x, y, c)
		}
	}
	return img
}

// classColour returns the colour of the images of class k in writeFolder: red 40*k, green 10*i for
// image i of the class, blue 200.
func classColour(k, i int) color.RGBA {
	return color.RGBA{R: uint8(40 * k), G: uint8(10 * i), B: 200, A: 255}
}

// writeFolder writes an ImageNet-style folder under a new directory and returns its root: for
// each split and class, count uniform PNG images of 16x12 pixels coloured by classColour.
func writeFolder(t testing.TB, splits map[string]map[string]int) string {
	t.Helper()
	root := t.TempDir()
	for split, classes := range splits {
		for class, count := range classes {
			k := int(class[len(class)-1] - '0')
			for i := range count {
				writePNG(t, filepath.Join(root, split, class), "img"+string(rune('0'+i))+".png",
					uniformImage(16, 12, classColour(k, i)))
			}
		}
	}
	return root
}

func TestOpenFolderClassIndex(t *testing.T) {
	root := writeFolder(t, map[string]map[string]int{
		"train": {"c2": 2, "c0": 1, "c1": 3},
		"val":   {"c2": 1, "c1": 2},
	})
	// Files that the listing ignores.
	writeFileTB(t, filepath.Join(root, "train", "c0"), "notes.txt", []byte("not an image"))
	writeFileTB(t, filepath.Join(root, "train", "c0"), ".hidden.jpg", []byte("hidden"))
	writeFileTB(t, filepath.Join(root, "train"), "README", []byte("a file beside the classes"))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "train", ".cache"), 0o755))
	writePNG(t, filepath.Join(root, "train", "c0"), "UPPER.JPEG", uniformImage(4, 4, classColour(0, 9)))

	classes, err := FolderClasses(root)
	require.NoError(t, err)
	assert.Equal(t, []string{"c0", "c1", "c2"}, classes)

	train, err := OpenFolder(root, Train, FolderOptions{Size: 8})
	require.NoError(t, err)
	val, err := OpenFolder(root, Test, FolderOptions{Size: 8})
	require.NoError(t, err)
	assert.Equal(t, classes, train.ClassNames())
	assert.Equal(t, classes, val.ClassNames(), "the test split uses the training split's class index")

	assert.Equal(t, 7, train.Len())
	assert.Equal(t, []int32{0, 0, 1, 1, 1, 2, 2}, train.Labels())
	assert.Equal(t, filepath.Join(root, "train", "c0", "UPPER.JPEG"), train.Path(0))
	assert.Equal(t, filepath.Join(root, "train", "c0", "img0.png"), train.Path(1))
	assert.Equal(t, filepath.Join(root, "train", "c1", "img2.png"), train.Path(4))

	assert.Equal(t, 3, val.Len())
	assert.Equal(t, []int32{1, 1, 2}, val.Labels(), "c1 is label 1 and c2 label 2 in val too")
	assert.Equal(t, filepath.Join(root, "val"), val.String())
	assert.Equal(t, Test, val.Split())
	assert.Equal(t, [3]int{8, 8, 3}, val.ExampleShape())

	size, err := train.ImageSize(1)
	require.NoError(t, err)
	assert.Equal(t, image.Pt(16, 12), size)
}

func TestOpenFolderErrors(t *testing.T) {
	tests := []struct {
		name   string
		splits map[string]map[string]int
		dirs   []string // extra empty directories
		files  []string // extra files
		split  Split
		want   []string
	}{
		{"unknown class in val", map[string]map[string]int{"train": {"c0": 1}, "val": {"c0": 1, "c9": 1}}, nil, nil, Test,
			[]string{`class "c9"`, "not a class of the training split"}},
		{"empty class directory", map[string]map[string]int{"train": {"c0": 1}}, []string{"train/c1"}, nil, Train,
			[]string{"class directory", "c1 is empty"}},
		{"class directory without images", map[string]map[string]int{"train": {"c0": 1}}, nil, []string{"train/c1/a.txt"}, Train,
			[]string{"c1 is empty", "no .jpg, .jpeg or .png files"}},
		{"empty train", nil, []string{"train"}, nil, Train, []string{"train is empty", "no class directories"}},
		{"flat val", map[string]map[string]int{"train": {"c0": 1}}, nil, []string{"val/a.jpg", "val/b.jpg"}, Test,
			[]string{"val is empty", "but 2 files", "one directory per class"}},
		{"missing val", map[string]map[string]int{"train": {"c0": 1}}, nil, nil, Test, []string{"val not found"}},
		{"missing train", nil, nil, nil, Train, []string{"train not found", "root/train/<class>/*.jpg"}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			root := writeFolder(t, test.splits)
			for _, dir := range test.dirs {
				require.NoError(t, os.MkdirAll(filepath.Join(root, dir), 0o755))
			}
			for _, file := range test.files {
				writeFileTB(t, filepath.Join(root, filepath.Dir(file)), filepath.Base(file), []byte("x"))
			}
			_, err := OpenFolder(root, test.split, FolderOptions{Size: 8})
			require.Error(t, err)
			for _, want := range test.want {
				assert.Contains(t, err.Error(), want)
			}
		})
	}

	missing := filepath.Join(t.TempDir(), "absent")
	_, err := OpenFolder(missing, Train, FolderOptions{Size: 8})
	assert.True(t, errors.Is(err, fs.ErrNotExist), "error %v wraps fs.ErrNotExist", err)
}

func TestFolderOptionsErrors(t *testing.T) {
	root := writeFolder(t, map[string]map[string]int{"train": {"c0": 1}})
	tests := []struct {
		name    string
		options FolderOptions
		want    string
	}{
		{"no size", FolderOptions{}, "invalid image size 0"},
		{"bad transform", FolderOptions{Size: 8, Transform: 5}, "invalid transform Transform(5)"},
		{"bad policy", FolderOptions{Size: 8, OnDecodeError: 4}, "invalid decode error policy 4"},
		{"scale above 1", FolderOptions{Size: 8, Scale: [2]float64{0.5, 2}}, "invalid crop scale [0.5 2]"},
		{"scale reversed", FolderOptions{Size: 8, Scale: [2]float64{0.5, 0.1}}, "invalid crop scale"},
		{"ratio zero", FolderOptions{Size: 8, AspectRatio: [2]float64{0, 1}}, "invalid crop aspect ratio"},
		{"crop fraction", FolderOptions{Size: 8, CenterCropFraction: 1.5}, "invalid centre crop fraction 1.5"},
		{"mean without std", FolderOptions{Size: 8, Mean: []float32{0, 0, 0}}, "set both Mean and Std"},
		{"two channels", FolderOptions{Size: 8, Mean: []float32{0, 0}, Std: []float32{1, 1}}, "got 2 means and 2 stds"},
		{"zero std", FolderOptions{Size: 8, Mean: []float32{0, 0, 0}, Std: []float32{1, 1, 0}}, "channel 2 has mean 0 and std 0"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			_, err := OpenFolder(root, Train, test.options)
			require.Error(t, err)
			assert.Contains(t, err.Error(), test.want)
		})
	}
	_, err := OpenFolder(root, Split(4), FolderOptions{Size: 8})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "invalid split 4")
}

func TestFolderCenterCropPixels(t *testing.T) {
	// A 12x8 image with red 20x and green 30y at pixel (x, y). Size 7 with fraction 0.875 resizes
	// the shorter side to 8, so the image keeps its size and the crop starts at (2, 0).
	img := image.NewRGBA(image.Rect(0, 0, 12, 8))
	for y := range 8 {
		for x := range 12 {
			img.SetRGBA(x, y, color.RGBA{R: uint8(20 * x), G: uint8(30 * y), B: 7, A: 255})
		}
	}
	root := t.TempDir()
	writePNG(t, filepath.Join(root, "train", "only"), "a.png", img)

	for _, flip := range []bool{false, true} {
		source, err := OpenFolder(root, Train, FolderOptions{Size: 7, Flip: flip})
		require.NoError(t, err)
		// Draw until the flip comes out as wanted: the first draw of each seed decides it.
		var out []float32
		for seed := uint64(0); ; seed++ {
			out = make([]float32, 7*7*3)
			_, err = source.Example(0, rand.NewPCG(seed, 0), out)
			require.NoError(t, err)
			if !flip || rand.NewPCG(seed, 0).Uint64()>>63 == 1 {
				break
			}
		}
		for y := range 7 {
			for x := range 7 {
				sx := x + 2
				if flip {
					sx = 2 + 6 - x
				}
				want := []float32{float32(20*sx) / 255, float32(30*y) / 255, 7.0 / 255}
				assert.InDeltaSlice(t, want, out[(y*7+x)*3:(y*7+x+1)*3], 1e-6, "flip %v, pixel (%d, %d)", flip, x, y)
			}
		}
	}
}

func TestFolderCenterCropResized(t *testing.T) {
	// A 24x16 image with red 10x at pixel (x, y). Size 7 with fraction 0.875 resizes the shorter
	// side from 16 to 8, so the image halves to 12x8 and the crop keeps columns 2 to 8. Resized
	// column r has its centre at source position 2r+1, where the ramp 10(p-0.5) is 20r+5, so
	// output column x (r = x+2) has red 20x+45. Bilinear resampling keeps the ramp exact away
	// from the image's edges, which the crop excludes.
	img := image.NewRGBA(image.Rect(0, 0, 24, 16))
	for y := range 16 {
		for x := range 24 {
			img.SetRGBA(x, y, color.RGBA{R: uint8(10 * x), G: 90, B: 30, A: 255})
		}
	}
	root := t.TempDir()
	writePNG(t, filepath.Join(root, "train", "only"), "a.png", img)
	source, err := OpenFolder(root, Train, FolderOptions{Size: 7})
	require.NoError(t, err)
	out := make([]float32, 7*7*3)
	_, err = source.Example(0, rand.NewPCG(1, 1), out)
	require.NoError(t, err)
	for y := range 7 {
		for x := range 7 {
			p := out[(y*7+x)*3:]
			assert.InDelta(t, float64(20*x+45)/255, p[0], 1.0/255, "red of (%d, %d)", x, y)
			assert.InDelta(t, 90.0/255, p[1], 1e-6, "green of (%d, %d)", x, y)
			assert.InDelta(t, 30.0/255, p[2], 1e-6, "blue of (%d, %d)", x, y)
		}
	}
}

func TestFolderTransformsKeepColour(t *testing.T) {
	// Crops and resizing of a uniform image keep its colour, and normalization applies after.
	root := t.TempDir()
	colour := color.RGBA{R: 51, G: 102, B: 204, A: 255}
	writeJPEG(t, filepath.Join(root, "train", "a"), "big.jpg", uniformImage(500, 375, colour), 95)
	writePNG(t, filepath.Join(root, "train", "a"), "small.png", uniformImage(20, 30, colour))

	tests := []struct {
		name    string
		options FolderOptions
		want    []float32
	}{
		{"centre crop", FolderOptions{Size: 24}, []float32{0.2, 0.4, 0.8}},
		{"random resized crop", FolderOptions{Size: 24, Transform: RandomResizedCrop, Flip: true}, []float32{0.2, 0.4, 0.8}},
		{"normalized", FolderOptions{Size: 24, Mean: []float32{0.2, 0.2, 0.2}, Std: []float32{0.1, 0.2, 0.3}},
			[]float32{0, 1, 2}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			source, err := OpenFolder(root, Train, test.options)
			require.NoError(t, err)
			for i := range source.Len() {
				out := make([]float32, 24*24*3)
				label, err := source.Example(i, rand.NewPCG(uint64(i), 1), out)
				require.NoError(t, err)
				assert.Equal(t, int32(0), label)
				// JPEG shifts the colour by up to 2 of 255, and the normalization scales that.
				for p := 0; p < len(out); p += 3 {
					require.InDeltaSlice(t, test.want, out[p:p+3], 0.1, "image %d, pixel %d", i, p/3)
				}
			}
		})
	}
}

func TestFolderUndecodableImage(t *testing.T) {
	root := writeFolder(t, map[string]map[string]int{"train": {"c1": 3}})
	bad := writeFileTB(t, filepath.Join(root, "train", "c1"), "img1.png", []byte("garbage, not a PNG"))

	t.Run("stop", func(t *testing.T) {
		source, err := OpenFolder(root, Train, FolderOptions{Size: 4})
		require.NoError(t, err)
		_, err = source.Example(1, rand.NewPCG(1, 1), make([]float32, 4*4*3))
		require.Error(t, err)
		var decodeErr *DecodeError
		require.True(t, errors.As(err, &decodeErr), "error %v is a *DecodeError", err)
		assert.Equal(t, bad, decodeErr.Path)
		assert.Contains(t, err.Error(), bad)
		assert.Contains(t, err.Error(), "SkipUndecodable")
		assert.Equal(t, 0, source.Skipped())
	})

	t.Run("skip", func(t *testing.T) {
		var logs bytes.Buffer
		logger := slog.New(slog.NewTextHandler(&logs, nil))
		source, err := OpenFolder(root, Train, FolderOptions{Size: 4, OnDecodeError: SkipUndecodable, Logger: logger})
		require.NoError(t, err)

		// Example 1 takes the place of example 2: green 10*2 = 20.
		for range 2 {
			out := make([]float32, 4*4*3)
			label, err := source.Example(1, rand.NewPCG(1, 1), out)
			require.NoError(t, err)
			assert.Equal(t, int32(0), label)
			assert.InDeltaSlice(t, []float32{40.0 / 255, 20.0 / 255, 200.0 / 255}, out[:3], 1e-6, "pixel 0")
		}
		assert.Equal(t, 1, source.Skipped(), "a file skipped twice counts once")
		assert.Equal(t, []string{bad}, source.SkippedPaths())
		assert.Contains(t, logs.String(), "skipping undecodable image")
		assert.Contains(t, logs.String(), bad)
		assert.Equal(t, 1, bytes.Count(logs.Bytes(), []byte("skipping")), "warnings logged:\n%s", logs.String())
	})

	t.Run("skip wraps around", func(t *testing.T) {
		root := writeFolder(t, map[string]map[string]int{"train": {"c1": 2, "c2": 1}})
		writeFileTB(t, filepath.Join(root, "train", "c2"), "img0.png", []byte("garbage"))
		source, err := OpenFolder(root, Train, FolderOptions{Size: 4, OnDecodeError: SkipUndecodable,
			Logger: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))})
		require.NoError(t, err)
		out := make([]float32, 4*4*3)
		label, err := source.Example(2, rand.NewPCG(1, 1), out)
		require.NoError(t, err)
		assert.Equal(t, int32(0), label, "the last file is replaced by the first")
		assert.InDelta(t, 0, out[1], 1e-7, "green of the first image of c1")
	})

	t.Run("skip all", func(t *testing.T) {
		root := t.TempDir()
		writeFileTB(t, filepath.Join(root, "train", "c0"), "a.jpg", []byte("garbage"))
		source, err := OpenFolder(root, Train, FolderOptions{Size: 4, OnDecodeError: SkipUndecodable,
			Logger: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))})
		require.NoError(t, err)
		_, err = source.Example(0, rand.NewPCG(1, 1), make([]float32, 4*4*3))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "none of the 1 images")
	})
}
