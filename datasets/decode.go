package datasets

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"os"

	// Register the decoders that image.Decode picks from the file's first bytes.
	_ "image/jpeg"
	_ "image/png"
)

// DecodeError reports an image file whose bytes could not be decoded as a JPEG or PNG image.
type DecodeError struct {
	Path string
	Err  error
}

// Error names the file and the decoder's message.
func (e *DecodeError) Error() string {
	return fmt.Sprintf("decoding image %s: %v; the file is corrupt or not a JPEG or PNG image: replace or remove it, "+
		"or skip such files with FolderOptions.OnDecodeError = SkipUndecodable", e.Path, e.Err)
}

// Unwrap returns the decoder's error.
func (e *DecodeError) Unwrap() error { return e.Err }

// DecodeImageFile reads the JPEG or PNG image at path, detecting the format from the content and
// not from the file name. A file that cannot be read is a wrapped *fs.PathError, and one that
// cannot be decoded a *DecodeError.
func DecodeImageFile(path string) (image.Image, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading image: %w", err)
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, &DecodeError{Path: path, Err: err}
	}
	return img, nil
}

// ToRGBA converts img, whatever its colour model, to an opaque RGBA image with the same bounds.
//
// Grey, YCbCr (JPEG), CMYK (Adobe JPEG), palette and 16-bit images map to the nearest 8-bit RGB
// colour. Transparency is dropped as PIL's convert("RGB") drops it: a pixel keeps its
// non-premultiplied colour, so a fully transparent pixel of an NRGBA image keeps the colour
// stored with it, while one of a premultiplied RGBA image becomes black.
func ToRGBA(img image.Image) *image.RGBA {
	bounds := img.Bounds()
	out := image.NewRGBA(bounds)
	switch src := img.(type) {
	case *image.YCbCr, *image.Gray, *image.Gray16, *image.CMYK:
		// These models have no alpha, and the standard library's Draw converts them.
		draw.Draw(out, bounds, src, bounds.Min, draw.Src)
	case *image.NRGBA:
		for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
			in := src.Pix[src.PixOffset(bounds.Min.X, y):]
			row := out.Pix[out.PixOffset(bounds.Min.X, y):]
			for x := 0; x < bounds.Dx(); x++ {
				row[4*x], row[4*x+1], row[4*x+2], row[4*x+3] = in[4*x], in[4*x+1], in[4*x+2], 0xff
			}
		}
	case *image.RGBA:
		// PNG decodes opaque true-colour images to RGBA, so this path is common. Only pixels with
		// alpha below 255 need their colour divided by alpha.
		for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
			in := src.Pix[src.PixOffset(bounds.Min.X, y):]
			row := out.Pix[out.PixOffset(bounds.Min.X, y):]
			for x := 0; x < bounds.Dx(); x++ {
				c := color.RGBA{R: in[4*x], G: in[4*x+1], B: in[4*x+2], A: in[4*x+3]}
				if c.A != 0xff {
					n := color.NRGBAModel.Convert(c).(color.NRGBA)
					c = color.RGBA{R: n.R, G: n.G, B: n.B}
				}
				row[4*x], row[4*x+1], row[4*x+2], row[4*x+3] = c.R, c.G, c.B, 0xff
			}
		}
	default:
		for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
			for x := bounds.Min.X; x < bounds.Max.X; x++ {
				c := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA)
				out.SetRGBA(x, y, color.RGBA{R: c.R, G: c.G, B: c.B, A: 0xff})
			}
		}
	}
	return out
}

// opaqueRGB returns img when the scaler reads it as opaque RGB as it is (YCbCr and grey images),
// and ToRGBA(img) otherwise.
func opaqueRGB(img image.Image) image.Image {
	switch img.(type) {
	case *image.YCbCr, *image.Gray:
		return img
	}
	return ToRGBA(img)
}
