package datasets

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/image/draw"
)

// writePNG encodes img as PNG into dir/name and returns the path.
func writePNG(t testing.TB, dir, name string, img image.Image) string {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, png.Encode(&buf, img))
	return writeFileTB(t, dir, name, buf.Bytes())
}

// writeJPEG encodes img as JPEG of the given quality into dir/name and returns the path.
func writeJPEG(t testing.TB, dir, name string, img image.Image, quality int) string {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, jpeg.Encode(&buf, img, &jpeg.Options{Quality: quality}))
	return writeFileTB(t, dir, name, buf.Bytes())
}

// writeFileTB writes content into dir/name, creating dir, and returns the path.
func writeFileTB(t testing.TB, dir, name string, content []byte) string {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o755))
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, content, 0o644))
	return path
}

// rgbAt returns the RGB bytes of pixel (x, y) of img.
func rgbAt(img *image.RGBA, x, y int) [3]uint8 {
	c := img.RGBAAt(x, y)
	return [3]uint8{c.R, c.G, c.B}
}

func TestToRGBAColourModels(t *testing.T) {
	rect := image.Rect(0, 0, 2, 1)
	gray := image.NewGray(rect)
	gray.SetGray(0, 0, color.Gray{Y: 100})
	gray16 := image.NewGray16(rect)
	gray16.SetGray16(0, 0, color.Gray16{Y: 0x1234})
	cmyk := image.NewCMYK(rect)
	cmyk.SetCMYK(0, 0, color.CMYK{C: 0, M: 255, Y: 255, K: 0}) // magenta and yellow ink make red
	cmyk.SetCMYK(1, 0, color.CMYK{C: 0, M: 0, Y: 0, K: 255})   // black
	palette := image.NewPaletted(rect, color.Palette{color.NRGBA{R: 10, G: 20, B: 30, A: 0}, color.NRGBA{R: 1, G: 2, B: 3, A: 255}})
	palette.SetColorIndex(0, 0, 0)
	palette.SetColorIndex(1, 0, 1)
	nrgba := image.NewNRGBA(rect)
	nrgba.SetNRGBA(0, 0, color.NRGBA{R: 200, G: 150, B: 100, A: 128})
	nrgba64 := image.NewNRGBA64(rect)
	nrgba64.SetNRGBA64(0, 0, color.NRGBA64{R: 0xff00, G: 0x8000, B: 0x00ff, A: 0xffff})
	rgba := image.NewRGBA(rect)
	rgba.SetRGBA(0, 0, color.RGBA{R: 100, A: 128}) // premultiplied: the colour is 100*255/128 = 199.2
	opaque := image.NewRGBA(rect)
	opaque.SetRGBA(0, 0, color.RGBA{R: 1, G: 2, B: 3, A: 255})
	ycbcr := image.NewYCbCr(rect, image.YCbCrSubsampleRatio444)
	ycbcr.Y[0], ycbcr.Cb[0], ycbcr.Cr[0] = 128, 128, 128 // neutral grey

	tests := []struct {
		name string
		img  image.Image
		want [3]uint8
	}{
		{"grey", gray, [3]uint8{100, 100, 100}},
		{"16-bit grey", gray16, [3]uint8{0x12, 0x12, 0x12}},
		{"CMYK magenta and yellow", cmyk, [3]uint8{255, 0, 0}},
		{"palette with transparent entry", palette, [3]uint8{10, 20, 30}},
		{"NRGBA half transparent", nrgba, [3]uint8{200, 150, 100}},
		{"16-bit NRGBA", nrgba64, [3]uint8{0xff, 0x80, 0x00}},
		{"premultiplied RGBA", rgba, [3]uint8{199, 0, 0}},
		{"opaque RGBA", opaque, [3]uint8{1, 2, 3}},
		{"YCbCr grey", ycbcr, [3]uint8{128, 128, 128}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			got := ToRGBA(test.img)
			assert.Equal(t, rect, got.Rect)
			assert.Equal(t, test.want, rgbAt(got, 0, 0), "pixel (0, 0)")
			for x := range 2 {
				assert.Equal(t, uint8(255), got.RGBAAt(x, 0).A, "alpha of pixel (%d, 0)", x)
			}
		})
	}
	assert.Equal(t, [3]uint8{0, 0, 0}, rgbAt(ToRGBA(cmyk), 1, 0), "CMYK black")
	assert.Equal(t, [3]uint8{1, 2, 3}, rgbAt(ToRGBA(palette), 1, 0), "opaque palette entry")
}

func TestToRGBAKeepsBounds(t *testing.T) {
	gray := image.NewGray(image.Rect(3, 4, 5, 6))
	gray.SetGray(4, 5, color.Gray{Y: 9})
	nrgba := image.NewNRGBA(image.Rect(3, 4, 5, 6))
	nrgba.SetNRGBA(4, 5, color.NRGBA{R: 9, G: 8, B: 7, A: 6})
	for _, img := range []image.Image{gray, nrgba} {
		got := ToRGBA(img)
		assert.Equal(t, image.Rect(3, 4, 5, 6), got.Rect)
		r, _, _, _ := got.At(4, 5).RGBA()
		assert.Equal(t, uint32(9*0x101), r, "red of (4, 5) in %T", img)
	}
}

func TestDecodeImageFileFormats(t *testing.T) {
	dir := t.TempDir()
	rect := image.Rect(0, 0, 4, 3)

	gray := image.NewGray(rect)
	palette := image.NewPaletted(rect, color.Palette{color.RGBA{R: 40, G: 80, B: 120, A: 255}})
	gray16 := image.NewGray16(rect)
	nrgba := image.NewNRGBA(rect)
	ycbcr := image.NewRGBA(rect)
	for y := range 3 {
		for x := range 4 {
			gray.SetGray(x, y, color.Gray{Y: 77})
			gray16.SetGray16(x, y, color.Gray16{Y: 0xabcd})
			nrgba.SetNRGBA(x, y, color.NRGBA{R: 250, G: 5, B: 60, A: 10})
			ycbcr.SetRGBA(x, y, color.RGBA{R: 200, G: 100, B: 50, A: 255})
		}
	}

	tests := []struct {
		name      string
		path      string
		want      [3]uint8
		tolerance float64 // JPEG is lossy
	}{
		{"grey PNG", writePNG(t, dir, "gray.png", gray), [3]uint8{77, 77, 77}, 0},
		{"palette PNG", writePNG(t, dir, "palette.png", palette), [3]uint8{40, 80, 120}, 0},
		{"16-bit PNG", writePNG(t, dir, "gray16.png", gray16), [3]uint8{0xab, 0xab, 0xab}, 0},
		{"RGBA PNG", writePNG(t, dir, "nrgba.png", nrgba), [3]uint8{250, 5, 60}, 0},
		{"grey JPEG", writeJPEG(t, dir, "gray.jpg", gray, 95), [3]uint8{77, 77, 77}, 2},
		{"colour JPEG", writeJPEG(t, dir, "colour.jpeg", ycbcr, 95), [3]uint8{200, 100, 50}, 4},
		{"PNG named .jpg", writePNG(t, dir, "png.jpg", gray), [3]uint8{77, 77, 77}, 0},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			img, err := DecodeImageFile(test.path)
			require.NoError(t, err)
			rgba := ToRGBA(img)
			for y := range 3 {
				for x := range 4 {
					got := rgbAt(rgba, x, y)
					for c := range 3 {
						assert.InDelta(t, float64(test.want[c]), float64(got[c]), test.tolerance,
							"channel %d of pixel (%d, %d): got %v, want %v", c, x, y, got, test.want)
					}
				}
			}
		})
	}
}

func TestDecodeImageFileErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := writeFileTB(t, dir, "garbage.jpg", []byte("this is not a JPEG file at all"))
	_, err := DecodeImageFile(garbage)
	require.Error(t, err)
	var decodeErr *DecodeError
	require.True(t, errors.As(err, &decodeErr), "error %v is a *DecodeError", err)
	assert.Equal(t, garbage, decodeErr.Path)
	assert.Contains(t, err.Error(), garbage)

	_, err = DecodeImageFile(filepath.Join(dir, "absent.png"))
	require.Error(t, err)
	assert.ErrorIs(t, err, os.ErrNotExist)
	assert.False(t, errors.As(err, &decodeErr), "a missing file is not a decode error")
}

func TestCenterCropGeometry(t *testing.T) {
	tests := []struct {
		name          string
		width, height int
		size          int
		fraction      float64
		wantResized   image.Point
		wantCrop      image.Rectangle
	}{
		// 375 -> 224/0.875 = 256, and 500 -> int(256*500/375) = int(341.33) = 341.
		{"landscape 500x375", 500, 375, 224, 0.875, image.Pt(341, 256), image.Rect(58, 16, 282, 240)},
		{"portrait 375x500", 375, 500, 224, 0.875, image.Pt(256, 341), image.Rect(16, 58, 240, 282)},
		{"no resize", 12, 8, 7, 0.875, image.Pt(12, 8), image.Rect(2, 0, 9, 7)},
		{"square, whole image", 32, 32, 32, 1, image.Pt(32, 32), image.Rect(0, 0, 32, 32)},
		// 32/0.875 = 36.57 -> 36.
		{"small upscale", 10, 20, 32, 0.875, image.Pt(36, 72), image.Rect(2, 20, 34, 52)},
		// 7/0.875 = 8, long side int(8*1000/10) = 800.
		{"elongated", 1000, 10, 7, 0.875, image.Pt(800, 8), image.Rect(396, 0, 403, 7)},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			resized, crop := centerCropGeometry(test.width, test.height, test.size, test.fraction)
			assert.Equal(t, test.wantResized, resized, "resized size")
			assert.Equal(t, test.wantCrop, crop, "crop")
		})
	}
}

func TestRandomResizedCropBounds(t *testing.T) {
	rng := rand.NewPCG(3, 4)
	const width, height = 500, 375
	scale, ratio := DefaultCropScale, DefaultCropAspectRatio
	sawSmall, sawLarge := false, false
	for range 2000 {
		r := randomResizedCrop(width, height, rng, scale, ratio)
		require.True(t, r.In(image.Rect(0, 0, width, height)), "crop %v inside the image", r)
		require.False(t, r.Empty(), "crop %v is empty", r)

		// Rounding each side moves the area and the aspect ratio by less than one pixel's worth.
		w, h := float64(r.Dx()), float64(r.Dy())
		area := w * h / (width * height)
		assert.True(t, area >= scale[0]*0.98 && area <= 1, "area fraction %g of crop %v", area, r)
		aspect := w / h
		tolerance := 1/w + 1/h
		assert.True(t, aspect >= ratio[0]*(1-tolerance) && aspect <= ratio[1]*(1+tolerance),
			"aspect ratio %g of crop %v", aspect, r)
		sawSmall = sawSmall || area < 0.2
		sawLarge = sawLarge || area > 0.8
	}
	assert.True(t, sawSmall, "some crops cover less than 20%% of the image")
	assert.True(t, sawLarge, "some crops cover more than 80%% of the image")
}

func TestRandomResizedCropFallback(t *testing.T) {
	// No crop of a 1000x10 image has area >= 800 and height <= 10 with aspect ratio <= 4/3, so
	// the crop falls back to height 10 and width round(10 * 4/3) = 13, centred.
	for seed := range uint64(20) {
		r := randomResizedCrop(1000, 10, rand.NewPCG(seed, 0), DefaultCropScale, DefaultCropAspectRatio)
		assert.Equal(t, image.Rect(493, 0, 506, 10), r, "seed %d", seed)
	}
	// A 10x1000 image falls back to width 10 and height round(10 / (3/4)) = 13.
	r := randomResizedCrop(10, 1000, rand.NewPCG(1, 0), DefaultCropScale, DefaultCropAspectRatio)
	assert.Equal(t, image.Rect(0, 493, 10, 506), r)
}

func TestRGBAToFloatsFlip(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 3, 1))
	for x := range 3 {
		img.SetRGBA(x, 0, color.RGBA{R: uint8(51 * x), G: 255, B: 0, A: 255})
	}
	out := make([]float32, 9)
	rgbaToFloats(img, false, out)
	assert.InDeltaSlice(t, []float32{0, 1, 0, 0.2, 1, 0, 0.4, 1, 0}, out, 1e-7, "not flipped")
	rgbaToFloats(img, true, out)
	assert.InDeltaSlice(t, []float32{0.4, 1, 0, 0.2, 1, 0, 0, 1, 0}, out, 1e-7, "flipped")
}

func TestScaleToUniform(t *testing.T) {
	// Resampling a uniform image gives the same colour at every pixel, up to rounding.
	src := image.NewRGBA(image.Rect(0, 0, 50, 37))
	for i := 0; i < len(src.Pix); i += 4 {
		src.Pix[i], src.Pix[i+1], src.Pix[i+2], src.Pix[i+3] = 10, 130, 250, 255
	}
	for _, size := range []int{7, 24, 100} {
		dst := image.NewRGBA(image.Rect(0, 0, size, size))
		scaleTo(dst, src, image.Rect(5, 3, 45, 30), draw.BiLinear)
		for y := range size {
			for x := range size {
				got := rgbAt(dst, x, y)
				for c, want := range []float64{10, 130, 250} {
					require.InDelta(t, want, float64(got[c]), 1, "size %d, channel %d of (%d, %d)", size, c, x, y)
				}
			}
		}
	}
}

func TestScaleToRamp(t *testing.T) {
	// Bilinear resampling keeps a linear ramp linear away from the edges of the source rectangle.
	// Source pixel x has red 10x and its centre at x+0.5, so the ramp is 10(p-0.5) at position p.
	// Halving the crop (4, 0)-(20, 16) to 8x8 puts output pixel x at p = 4 + 2(x+0.5), where the
	// ramp is 20x + 45.
	src := image.NewRGBA(image.Rect(0, 0, 24, 16))
	for y := range 16 {
		for x := range 24 {
			src.SetRGBA(x, y, color.RGBA{R: uint8(10 * x), G: 60, B: 0, A: 255})
		}
	}
	dst := image.NewRGBA(image.Rect(0, 0, 8, 8))
	scaleTo(dst, src, image.Rect(4, 0, 20, 16), draw.BiLinear)
	for y := range 8 {
		for x := 1; x < 7; x++ {
			assert.InDelta(t, float64(20*x+45), float64(dst.RGBAAt(x, y).R), 1, "red of (%d, %d)", x, y)
			assert.Equal(t, uint8(60), dst.RGBAAt(x, y).G, "green of (%d, %d)", x, y)
		}
	}
}

func TestByteToUnit(t *testing.T) {
	assert.Equal(t, float32(0), byteToUnit[0])
	assert.Equal(t, float32(1), byteToUnit[255])
	assert.InDelta(t, 0.5019608, byteToUnit[128], 1e-7)
	assert.False(t, math.IsNaN(float64(byteToUnit[17])))
}
