package datasets

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
)

// IDX magic numbers: two zero bytes, the element type (0x08 is uint8) and the number of dimensions.
const (
	idxImagesMagic = 0x00000803 // uint8, dims [count, rows, cols]
	idxLabelsMagic = 0x00000801 // uint8, dims [count]
)

// gzipMagic is the first two bytes of every gzip stream (RFC 1952).
var gzipMagic = []byte{0x1f, 0x8b}

// IDXImages is the content of an IDX image file: Count images of Rows x Cols uint8 pixels.
type IDXImages struct {
	Count, Rows, Cols int

	// Pixels holds the images one after the other, each row-major, so that pixel (row, col) of
	// image i is Pixels[(i*Rows+row)*Cols+col].
	Pixels []byte
}

// ReadIDXImages reads an IDX image file (magic 0x00000803), raw or gzip-compressed.
// Compression is detected from the gzip magic bytes, not from the file name.
// The file must hold exactly the bytes that its header declares.
func ReadIDXImages(path string) (*IDXImages, error) {
	dims, pixels, err := readIDX(path, idxImagesMagic)
	if err != nil {
		return nil, err
	}
	return &IDXImages{Count: dims[0], Rows: dims[1], Cols: dims[2], Pixels: pixels}, nil
}

// ReadIDXLabels reads an IDX label file (magic 0x00000801), raw or gzip-compressed.
// Compression is detected from the gzip magic bytes, not from the file name.
// The file must hold exactly the bytes that its header declares.
func ReadIDXLabels(path string) ([]uint8, error) {
	_, labels, err := readIDX(path, idxLabelsMagic)
	return labels, err
}

// readIDX reads the IDX file at path, checks that its magic number is wantMagic and returns the
// dimensions from its header and the data that follows.
func readIDX(path string, wantMagic uint32) (dims []int, data []byte, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("opening IDX file: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("reading IDX file: %w", err)
	}
	if info.Size() == 0 {
		return nil, nil, fmt.Errorf("IDX file %s is empty (0 bytes); download or copy it again", path)
	}

	// Decompress when the file starts with the gzip magic bytes.
	buffered := bufio.NewReaderSize(f, 1<<20)
	var r io.Reader = buffered
	where := "the file has"
	if head, _ := buffered.Peek(len(gzipMagic)); bytes.Equal(head, gzipMagic) {
		gz, err := gzip.NewReader(buffered)
		if err != nil {
			return nil, nil, fmt.Errorf("IDX file %s starts with the gzip magic bytes but is not a valid gzip stream: %w", path, err)
		}
		defer gz.Close()
		r = gz
		where = "it decompresses to"
	}

	// Header: the magic number, then one big-endian uint32 per dimension.
	numDims := int(wantMagic & 0xff)
	header := make([]byte, 4*(1+numDims))
	n, err := io.ReadFull(r, header)
	switch {
	case n == 0 && errors.Is(err, io.EOF):
		return nil, nil, fmt.Errorf("IDX file %s contains no data after gzip decompression; download or copy it again", path)
	case n >= 4 && binary.BigEndian.Uint32(header) != wantMagic:
		return nil, nil, wrongMagicError(path, binary.BigEndian.Uint32(header), wantMagic)
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return nil, nil, fmt.Errorf("IDX file %s is truncated: its header needs %d bytes but %s %d; download or copy it again",
			path, len(header), where, n)
	case err != nil:
		return nil, nil, fmt.Errorf("reading IDX file %s: %w", path, err)
	}
	dims = make([]int, numDims)
	size := uint64(1)
	for i := range dims {
		d := binary.BigEndian.Uint32(header[4*(i+1):])
		dims[i] = int(d)
		var high uint64
		high, size = bits.Mul64(size, uint64(d))
		if high != 0 || size > 1<<62 {
			return nil, nil, fmt.Errorf("IDX file %s declares dimensions %v, too large to read; the header is corrupt",
				path, dims[:i+1])
		}
	}

	// Data: exactly size bytes. The read is limited so that a corrupt header cannot make it
	// allocate more memory than the file holds.
	data, err = io.ReadAll(io.LimitReader(r, int64(size)))
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, nil, fmt.Errorf("reading IDX file %s: %w", path, err)
	}
	if uint64(len(data)) < size {
		return nil, nil, fmt.Errorf("IDX file %s is truncated: the header declares dimensions %v, so the file needs %d bytes, but %s %d; download or copy it again",
			path, dims, uint64(len(header))+size, where, len(header)+len(data))
	}

	// Reading to the end also makes the gzip reader verify its checksum.
	extra, err := io.Copy(io.Discard, r)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the end of IDX file %s: %w", path, err)
	}
	if extra > 0 {
		return nil, nil, fmt.Errorf("IDX file %s has %d bytes after the data its header declares (dimensions %v); it is not a valid IDX file",
			path, extra, dims)
	}
	return dims, data, nil
}

// wrongMagicError describes a magic number mismatch, naming the likely cause where one is known.
func wrongMagicError(path string, got, want uint32) error {
	hint := "it is not an IDX file of this kind"
	switch {
	case want == idxImagesMagic && got == idxLabelsMagic:
		hint = "it is an IDX label file, so the image and label paths may be swapped"
	case want == idxLabelsMagic && got == idxImagesMagic:
		hint = "it is an IDX image file, so the image and label paths may be swapped"
	case got>>16 == uint32(gzipMagic[0])<<8|uint32(gzipMagic[1]):
		hint = "it may be compressed twice"
	}
	return fmt.Errorf("IDX file %s has magic number 0x%08x, expected 0x%08x: %s", path, got, want, hint)
}
