package datasets

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// idxBytes returns an IDX file: the magic number, the dimensions, then data.
func idxBytes(magic uint32, dims []uint32, data []byte) []byte {
	var buf bytes.Buffer
	_ = binary.Write(&buf, binary.BigEndian, magic)
	_ = binary.Write(&buf, binary.BigEndian, dims)
	buf.Write(data)
	return buf.Bytes()
}

// gzipBytes returns data compressed with gzip.
func gzipBytes(t *testing.T, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	_, err := w.Write(data)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	return buf.Bytes()
}

// writeFile writes content to name in dir and returns the path.
func writeFile(t *testing.T, dir, name string, content []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, content, 0o644))
	return path
}

// twoImages is an IDX image file of 2 images of 2x3 pixels with values 0 to 11.
func twoImages() []byte {
	return idxBytes(idxImagesMagic, []uint32{2, 2, 3}, []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
}

func TestReadIDXImagesRawAndGzip(t *testing.T) {
	dir := t.TempDir()
	// The gzip copy has a name without .gz and the raw one a name with it: detection must use
	// the content.
	paths := map[string]string{
		"raw":  writeFile(t, dir, "raw.gz", twoImages()),
		"gzip": writeFile(t, dir, "compressed", gzipBytes(t, twoImages())),
	}
	for name, path := range paths {
		t.Run(name, func(t *testing.T) {
			images, err := ReadIDXImages(path)
			require.NoError(t, err)
			assert.Equal(t, 2, images.Count, "count")
			assert.Equal(t, 2, images.Rows, "rows")
			assert.Equal(t, 3, images.Cols, "cols")

			// Image 1 is [[6, 7, 8], [9, 10, 11]].
			size := images.Rows * images.Cols
			got := images.Pixels[size : 2*size]
			assert.Equal(t, []byte{6, 7, 8, 9, 10, 11}, got, "image 1")
			assert.Equal(t, byte(10), images.Pixels[(1*images.Rows+1)*images.Cols+1], "image 1, row 1, col 1")
		})
	}
}

func TestReadIDXLabels(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "labels", gzipBytes(t, idxBytes(idxLabelsMagic, []uint32{3}, []byte{4, 0, 9})))
	labels, err := ReadIDXLabels(path)
	require.NoError(t, err)
	assert.Equal(t, []uint8{4, 0, 9}, labels)
}

func TestReadIDXErrors(t *testing.T) {
	full := twoImages()
	tests := []struct {
		name    string
		content []byte
		want    []string // substrings of the error message
	}{
		{"empty file", []byte{}, []string{"is empty (0 bytes)"}},
		{"empty gzip stream", gzipBytes(t, nil), []string{"contains no data after gzip decompression"}},
		{"label magic", idxBytes(idxLabelsMagic, []uint32{2}, []byte{1, 2}),
			[]string{"magic number 0x00000801, expected 0x00000803", "paths may be swapped"}},
		{"text file", []byte("<html>not found</html>"),
			[]string{"magic number 0x3c68746d, expected 0x00000803"}},
		{"truncated data", full[:len(full)-3],
			[]string{"truncated", "dimensions [2 2 3]", "needs 28 bytes", "the file has 25"}},
		{"truncated data in gzip", gzipBytes(t, full[:len(full)-3]),
			[]string{"truncated", "needs 28 bytes", "it decompresses to 25"}},
		{"truncated gzip stream", gzipBytes(t, full)[:20],
			[]string{"truncated"}},
		{"truncated header", full[:10],
			[]string{"truncated", "header needs 16 bytes", "the file has 10"}},
		{"extra data", append(twoImages(), 0, 0),
			[]string{"has 2 bytes after the data", "not a valid IDX file"}},
		{"bad gzip header", []byte{0x1f, 0x8b, 0, 0, 0},
			[]string{"not a valid gzip stream"}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), "images", test.content)
			_, err := ReadIDXImages(path)
			require.Error(t, err)
			assert.Contains(t, err.Error(), path, "the error must name the file")
			for _, want := range test.want {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

func TestReadIDXGzipChecksum(t *testing.T) {
	compressed := gzipBytes(t, twoImages())
	// The gzip trailer is the CRC-32 then the size, each 4 bytes; flip a bit of the CRC.
	compressed[len(compressed)-8] ^= 1
	path := writeFile(t, t.TempDir(), "images.gz", compressed)
	_, err := ReadIDXImages(path)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "checksum")
}

func TestReadIDXMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent")
	_, err := ReadIDXImages(path)
	require.Error(t, err)
	assert.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, err.Error(), path)
}
