package datasets

import (
	"image"
	"math"
	"math/rand/v2"

	"golang.org/x/image/draw"
)

// randomResizedCrop draws the rectangle that the Inception-style random resized crop cuts from a
// width x height image, relative to its top-left corner, with the steps of torchvision's
// RandomResizedCrop.get_params.
//
// It draws an area fraction uniformly from scale and an aspect ratio (width / height) uniformly
// on a log scale from ratio, and keeps the first of 10 such draws whose rectangle fits in the
// image, placed uniformly at random. When none fits it falls back to the largest centred
// rectangle whose aspect ratio lies in ratio. Sides are rounded half away from zero, where
// Python's round goes half to even, so a side can differ by one in rare draws.
func randomResizedCrop(width, height int, rng *rand.PCG, scale, ratio [2]float64) image.Rectangle {
	area := float64(width * height)
	logRatio := [2]float64{math.Log(ratio[0]), math.Log(ratio[1])}
	for range 10 {
		targetArea := area * (scale[0] + (scale[1]-scale[0])*uniformFloat64(rng))
		aspect := math.Exp(logRatio[0] + (logRatio[1]-logRatio[0])*uniformFloat64(rng))
		w := int(math.Round(math.Sqrt(targetArea * aspect)))
		h := int(math.Round(math.Sqrt(targetArea / aspect)))
		if w > 0 && h > 0 && w <= width && h <= height {
			top := int(uniformBelow(rng, uint64(height-h+1)))
			left := int(uniformBelow(rng, uint64(width-w+1)))
			return image.Rect(left, top, left+w, top+h)
		}
	}

	// Fallback: clamp the image's own aspect ratio into ratio and centre the crop.
	w, h := width, height
	switch imageRatio := float64(width) / float64(height); {
	case imageRatio < ratio[0]:
		h = max(1, int(math.Round(float64(w)/ratio[0])))
	case imageRatio > ratio[1]:
		w = max(1, int(math.Round(float64(h)*ratio[1])))
	}
	left, top := (width-w)/2, (height-h)/2
	return image.Rect(left, top, left+w, top+h)
}

// centerCropGeometry returns the size to which evaluation resizes a width x height image, and the
// size x size rectangle it then keeps from the resized image. The shorter side becomes
// floor(size / cropRatio) and the longer one keeps the aspect ratio, rounded down as
// torchvision's Resize does. The crop is centred, with offsets rounded down.
func centerCropGeometry(width, height, size int, cropRatio float64) (resized image.Point, crop image.Rectangle) {
	// The small term keeps a quotient such as 224/0.875 = 256 from rounding down to 255 when
	// cropRatio is not exact in binary.
	short := int(math.Floor(float64(size)/cropRatio + 1e-6))
	if width <= height {
		resized = image.Pt(short, int(float64(short)*float64(height)/float64(width)))
	} else {
		resized = image.Pt(int(float64(short)*float64(width)/float64(height)), short)
	}
	// A very elongated image can round its longer side below size: keep it at least size.
	resized.X, resized.Y = max(resized.X, size), max(resized.Y, size)
	left, top := (resized.X-size)/2, (resized.Y-size)/2
	return resized, image.Rect(left, top, left+size, top+size)
}

// scaleTo resamples the part r of src, relative to its top-left corner, into dst, which it
// covers entirely. It copies the pixels without resampling when the sizes agree.
func scaleTo(dst *image.RGBA, src image.Image, r image.Rectangle, kernel *draw.Kernel) {
	r = r.Add(src.Bounds().Min)
	if r.Dx() == dst.Rect.Dx() && r.Dy() == dst.Rect.Dy() {
		draw.Draw(dst, dst.Rect, src, r.Min, draw.Src)
		return
	}
	kernel.Scale(dst, dst.Rect, src, r, draw.Src, nil)
}

// byteToUnit maps a byte v to v/255.
var byteToUnit = func() (table [256]float32) {
	for v := range table {
		table[v] = float32(v) / 255
	}
	return table
}()

// rgbaToFloats writes the RGB values of img, which starts at (0, 0), into out as HWC float32 in
// [0, 1], mirrored left to right when flip is set.
func rgbaToFloats(img *image.RGBA, flip bool, out []float32) {
	w, h := img.Rect.Dx(), img.Rect.Dy()
	for y := range h {
		row := img.Pix[y*img.Stride : y*img.Stride+4*w]
		dst := out[y*w*3 : (y+1)*w*3]
		for x := range w {
			sx := x
			if flip {
				sx = w - 1 - x
			}
			dst[3*x] = byteToUnit[row[4*sx]]
			dst[3*x+1] = byteToUnit[row[4*sx+1]]
			dst[3*x+2] = byteToUnit[row[4*sx+2]]
		}
	}
}
