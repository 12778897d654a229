package datasets

import (
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cifarRecord returns a record with the given label bytes and an image whose bytes are all 0
// except for the plane bytes in set, keyed by their index within the 3072 image bytes.
func cifarRecord(labels []byte, set map[int]byte) []byte {
	record := make([]byte, len(labels)+3072)
	copy(record, labels)
	for i, v := range set {
		record[len(labels)+i] = v
	}
	return record
}

// pixel returns the value of channel c of pixel (y, x) of example i of a 32x32x3 dataset.
func pixel(d *Dataset, i, y, x, c int) float32 {
	return d.Images[i*3072+(y*32+x)*3+c]
}

func TestLoadCIFAR100Record(t *testing.T) {
	// Red plane byte 31 is pixel (row 0, col 31); the green plane starts at record byte 2+1024 =
	// 1026, so image byte 1024 is green (0, 0); blue plane byte 32 is pixel (row 1, col 0).
	record := cifarRecord([]byte{7, 42}, map[int]byte{31: 255, 1024: 51, 2048 + 32: 102})
	require.Equal(t, byte(51), record[1026], "green (0, 0) is record byte 1026")
	second := cifarRecord([]byte{19, 99}, map[int]byte{0: 1})
	dir := filepath.Join(t.TempDir(), "cifar-100-binary")
	require.NoError(t, os.Mkdir(dir, 0o755))
	writeFile(t, dir, "train.bin", slices.Concat(record, second))

	tests := []struct {
		name       string
		labels     CIFAR100Labels
		wantName   string
		wantLabels []int32
		wantClass  string
		numClasses int
	}{
		{"fine", CIFAR100Fine, "cifar100", []int32{42, 99}, "leopard", 100},
		{"coarse", CIFAR100Coarse, "cifar100-coarse", []int32{7, 19}, "insects", 20},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			// The parent directory of cifar-100-binary works as well as the directory itself.
			d, err := LoadCIFAR100(filepath.Dir(dir), Train, test.labels)
			require.NoError(t, err)
			assert.Equal(t, test.wantName, d.Name)
			assert.Equal(t, [4]int{2, 32, 32, 3}, d.Shape())
			assert.Equal(t, test.wantLabels, d.Labels)
			assert.Equal(t, test.numClasses, d.NumClasses())
			assert.Equal(t, test.wantClass, d.ClassNames[d.Labels[0]])

			assert.Equal(t, float32(1), pixel(d, 0, 0, 31, 0), "red (0, 31)")
			assert.Equal(t, float32(0), pixel(d, 0, 0, 31, 1), "green (0, 31)")
			assert.InDelta(t, 0.2, pixel(d, 0, 0, 0, 1), 1e-7, "green (0, 0) is 51/255")
			assert.InDelta(t, 0.4, pixel(d, 0, 1, 0, 2), 1e-7, "blue (1, 0) is 102/255")
			assert.Equal(t, float32(0), pixel(d, 0, 0, 0, 0), "red (0, 0)")
			assert.InDelta(t, 1.0/255, pixel(d, 1, 0, 0, 0), 1e-9, "red (0, 0) of record 1")

			var nonzero int
			for _, x := range d.Image(0) {
				if x != 0 {
					nonzero++
				}
			}
			assert.Equal(t, 3, nonzero, "nonzero values in image 0")
		})
	}

	same, err := LoadCIFAR100(dir, Train, CIFAR100Fine)
	require.NoError(t, err)
	assert.Equal(t, []int32{42, 99}, same.Labels, "loading from cifar-100-binary itself")
}

func TestLoadCIFAR10Splits(t *testing.T) {
	dir := t.TempDir()
	// Batch k holds one record with label k-1 whose red (0, 0) byte is 10*k.
	for k := 1; k <= 5; k++ {
		writeFile(t, dir, "data_batch_"+string(rune('0'+k))+".bin",
			cifarRecord([]byte{byte(k - 1)}, map[int]byte{0: byte(10 * k)}))
	}
	writeFile(t, dir, "test_batch.bin", slices.Concat(
		cifarRecord([]byte{9}, map[int]byte{1023: 255, 2047: 255, 3071: 255}),
		cifarRecord([]byte{0}, nil)))

	train, err := LoadCIFAR10(dir, Train)
	require.NoError(t, err)
	assert.Equal(t, "cifar10/train", train.String())
	assert.Equal(t, []int32{0, 1, 2, 3, 4}, train.Labels)
	for i := range 5 {
		assert.InDelta(t, float64(10*(i+1))/255, pixel(train, i, 0, 0, 0), 1e-7, "red (0, 0) of record %d", i)
	}
	assert.Equal(t, CIFAR10Classes, train.ClassNames)

	test, err := LoadCIFAR10(dir, Test)
	require.NoError(t, err)
	assert.Equal(t, []int32{9, 0}, test.Labels)
	assert.Equal(t, "truck", test.ClassNames[9])
	// Byte 1023 of each plane is pixel (31, 31).
	for c := range 3 {
		assert.Equal(t, float32(1), pixel(test, 0, 31, 31, c), "channel %d of (31, 31)", c)
	}
}

func TestLoadCIFARClassNamesFile(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "test_batch.bin", cifarRecord([]byte{2}, nil))
	writeFile(t, dir, "batches.meta.txt", []byte("a0\na1\na2\na3\na4\na5\na6\na7\na8\na9\n\n\n"))
	d, err := LoadCIFAR10(dir, Test)
	require.NoError(t, err)
	assert.Equal(t, "a2", d.ClassNames[d.Labels[0]])

	writeFile(t, dir, "batches.meta.txt", []byte("a0\na1\n"))
	_, err = LoadCIFAR10(dir, Test)
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join(dir, "batches.meta.txt"))
	assert.Contains(t, err.Error(), "has 2 names, expected 10")

	dir100 := t.TempDir()
	writeFile(t, dir100, "test.bin", cifarRecord([]byte{3, 5}, nil))
	fine := make([]byte, 0, 1000)
	for i := range 100 {
		fine = append(fine, []byte("f"+string(rune('A'+i%26))+"\n")...)
	}
	writeFile(t, dir100, "fine_label_names.txt", fine)
	d, err = LoadCIFAR100(dir100, Test, CIFAR100Fine)
	require.NoError(t, err)
	assert.Equal(t, "fF", d.ClassNames[5])
	d, err = LoadCIFAR100(dir100, Test, CIFAR100Coarse)
	require.NoError(t, err)
	assert.Equal(t, "food_containers", d.ClassNames[3], "built-in coarse names without coarse_label_names.txt")
}

func TestCIFARClassLists(t *testing.T) {
	assert.Len(t, CIFAR10Classes, 10)
	assert.Len(t, CIFAR100FineClasses, 100)
	assert.Len(t, CIFAR100CoarseClasses, 20)
	assert.True(t, slices.IsSorted(CIFAR100FineClasses), "fine names in alphabetical order")
	assert.True(t, slices.IsSorted(CIFAR100CoarseClasses), "coarse names in alphabetical order")
	assert.Len(t, slices.Compact(slices.Clone(CIFAR100FineClasses)), 100, "distinct fine names")
}

func TestLoadCIFARBadFiles(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want []string
	}{
		{"truncated", make([]byte, 2*3073-1), []string{"has 6145 bytes", "3073-byte records", "truncated"}},
		{"CIFAR-100 record", make([]byte, 3074), []string{"has 3074 bytes", "3073-byte records"}},
		{"empty", nil, []string{"has 0 bytes"}},
		{"label out of range", cifarRecord([]byte{10}, nil), []string{"label 10 of record 0", "out of range", "10 classes"}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			dir := t.TempDir()
			path := writeFile(t, dir, "test_batch.bin", test.data)
			_, err := LoadCIFAR10(dir, Test)
			require.Error(t, err)
			assert.Contains(t, err.Error(), path)
			for _, want := range test.want {
				assert.Contains(t, err.Error(), want)
			}
		})
	}

	dir := t.TempDir()
	path := writeFile(t, dir, "train.bin", make([]byte, 3073))
	_, err := LoadCIFAR100(dir, Train, CIFAR100Fine)
	require.Error(t, err)
	assert.Contains(t, err.Error(), path)
	assert.Contains(t, err.Error(), "has 3073 bytes, not a whole positive number of 3074-byte records")
}

func TestLoadCIFARMissing(t *testing.T) {
	dir := t.TempDir()
	_, err := LoadCIFAR10(dir, Train)
	require.Error(t, err)
	assert.True(t, errors.Is(err, fs.ErrNotExist), "error %v wraps fs.ErrNotExist", err)
	assert.Contains(t, err.Error(), "data_batch_1.bin not found")
	assert.Contains(t, err.Error(), filepath.Join(dir, "cifar-10-batches-bin"))

	// Batch 1 present, batch 2 missing.
	writeFile(t, dir, "data_batch_1.bin", cifarRecord([]byte{0}, nil))
	_, err = LoadCIFAR10(dir, Train)
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join(dir, "data_batch_2.bin"))

	_, err = LoadCIFAR100("", Test, CIFAR100Fine)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no data directory given")
	assert.Contains(t, err.Error(), "-data-dir")

	_, err = LoadCIFAR100(dir, Split(3), CIFAR100Fine)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "invalid split 3")
	_, err = LoadCIFAR100(dir, Test, CIFAR100Labels(2))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "invalid CIFAR-100 label kind 2")
}

func TestNormalizeChannels(t *testing.T) {
	// Two pixels of two channels: channel 0 has 0.2 and 0.6, channel 1 has 1 and 0.
	d := &Dataset{Name: "tiny", Images: []float32{0.2, 1, 0.6, 0}, Height: 1, Width: 2, Channels: 2, Labels: []int32{0}}
	mean, std := d.PixelMeanStdPerChannel()
	assert.InDeltaSlice(t, []float64{0.4, 0.5}, mean, 1e-7, "means")
	assert.InDeltaSlice(t, []float64{0.2, 0.5}, std, 1e-7, "stds")

	require.NoError(t, d.NormalizeChannels([]float32{0.4, 0.5}, []float32{0.2, 0.5}))
	assert.InDeltaSlice(t, []float32{-1, 1, 1, -1}, d.Images, 1e-6)
	assert.Equal(t, []float32{0.4, 0.5}, d.ChannelMean)
	assert.Equal(t, []float32{0.2, 0.5}, d.ChannelStd)

	err := d.NormalizeChannels([]float32{0, 0}, []float32{1, 1})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "already normalized with channel means")
	err = d.Normalize(0, 1)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "already normalized")

	fresh := &Dataset{Name: "tiny", Channels: 3}
	err = fresh.NormalizeChannels([]float32{0, 0}, []float32{1, 1})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "got 2 means and 2 stds for 3 channels")
	err = fresh.NormalizeChannels([]float32{0, 0, 0}, []float32{1, 0, 1})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "channel 1 has mean 0 and std 0")
	err = fresh.NormalizeChannels([]float32{0, float32(math.NaN()), 0}, []float32{1, 1, 1})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "channel 1 has mean NaN")

	scalar := &Dataset{Name: "tiny", Images: []float32{0.5}, Height: 1, Width: 1, Channels: 1, Labels: []int32{0}}
	require.NoError(t, scalar.Normalize(0.5, 1))
	err = scalar.NormalizeChannels([]float32{0}, []float32{1})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "already normalized with mean 0.5")
}
