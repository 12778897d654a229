package datasets

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
)

// MaxRandAugmentMagnitude is the largest magnitude M that RandAugment accepts.
const MaxRandAugmentMagnitude = 30

// RandAugment is a Source that applies RandAugment (Cubuk et al. 2020, arXiv:1909.13719) to the
// examples of another Source: N operations per image, each drawn uniformly with replacement from
// RandAugmentOps, all at the same magnitude M.
//
// M runs from 0 to 30, and the strength of each operation grows linearly with M:
//
//	rotate             +-3M degrees
//	shear-x, shear-y   +-0.03M (the tangent of the shear angle)
//	translate-x, -y    +-0.045M of the image's width (x) or height (y)
//	solarize           invert the values above 1 - M/10
//	posterize          keep 8 - floor(0.4M) bits per value, at least 1
//	contrast, brightness, sharpness, color
//	                   blend factor 1 +- 0.09M, at least 0 (factor 1 is the original image)
//	identity, auto-contrast, equalize
//	                   no magnitude
//
// NOTE: these ranges are this package's choice. They were not checked against the reference
// implementation of the paper, so an M tuned there may not mean the same strength here.
//
// Each signed operation draws its sign with probability 1/2, so at M = 9 a rotation turns by 27
// degrees one way or the other, never less. Every operation with a magnitude leaves the image
// unchanged at M = 0, up to the 8-bit rounding of posterize. Auto-contrast and equalize have no
// magnitude and change the image at any M.
//
// Color (saturation) runs only on 3-channel images. Images with another channel count, such as
// greyscale ones, have no saturation and draw from the other 13 operations. Every other
// operation works on any number of channels: the photometric ones act on each channel, or on the luma of RGB images where
// the operation needs one grey level per pixel (the mean that contrast keeps and the grey that
// color blends with).
//
// Pixel values. The operations act on values in [0, 1] and clip their results to it. When the
// wrapped source yields normalized images (a *Dataset after Normalize or NormalizeChannels, a
// *PadCropFlip over one, or a *FolderSource with Mean and Std), Example maps each image back to
// [0, 1] with the source's mean and standard deviation, augments it, and normalizes it again.
// Other Source types must yield values in [0, 1].
//
// Geometric operations sample the image bilinearly about its centre, and pixels that come from
// outside the image take the value Fill.
//
// All random choices come from the rng passed to Example, after the wrapped source has drawn
// its own, so an example depends only on the pipeline's seed, the epoch and its index.
type RandAugment struct {
	Source Source
	// N is the number of operations applied to each image, 0 or more.
	N int
	// Magnitude is M, in [0, MaxRandAugmentMagnitude].
	Magnitude float64
	// Fill is the value in [0, 1] of pixels that rotate, shear and translate bring in from outside
	// the image: 0 is black, the background of MNIST and Fashion-MNIST.
	Fill float32
}

// RandAugmentOps lists the names of the operations that RandAugment draws from, in draw order.
// Greyscale images skip "color".
var RandAugmentOps = func() []string {
	names := make([]string, len(randAugmentOps))
	for i, op := range randAugmentOps {
		names[i] = op.name
	}
	return names
}()

// Len returns the number of examples of the wrapped source.
func (a *RandAugment) Len() int { return a.Source.Len() }

// ExampleShape returns the image shape of the wrapped source, which the operations keep.
func (a *RandAugment) ExampleShape() [3]int { return a.Source.ExampleShape() }

// String names the augmentation and the wrapped source.
func (a *RandAugment) String() string {
	return fmt.Sprintf("randaugment(N=%d, M=%g) of %s", a.N, a.Magnitude, sourceName(a.Source))
}

// Validate returns an error naming the first invalid field.
func (a *RandAugment) Validate() error {
	switch {
	case a.Source == nil:
		return fmt.Errorf("invalid RandAugment: Source is nil; set it to the source of the images to augment")
	case a.N < 0:
		return fmt.Errorf("invalid RandAugment N=%d: it must be 0 or more operations per image", a.N)
	case !(a.Magnitude >= 0 && a.Magnitude <= MaxRandAugmentMagnitude):
		return fmt.Errorf("invalid RandAugment magnitude M=%g: it must be in [0, %d]", a.Magnitude, MaxRandAugmentMagnitude)
	case !(a.Fill >= 0 && a.Fill <= 1):
		return fmt.Errorf("invalid RandAugment fill %g: it must be a pixel value in [0, 1]", a.Fill)
	}
	return nil
}

// Example writes the augmented image of example i into image and returns its label. The wrapped
// source draws from rng first; then each of the N operations draws its index and, when it is
// signed, its sign.
func (a *RandAugment) Example(i int, rng *rand.PCG, image []float32) (int32, error) {
	if err := a.Validate(); err != nil {
		return 0, err
	}
	label, err := a.Source.Example(i, rng, image)
	if err != nil || a.N == 0 {
		return label, err
	}
	shape := a.Source.ExampleShape()
	img := floatImage{pix: image, height: shape[0], width: shape[1], channels: shape[2]}
	mean, std := sourceNormalization(a.Source)
	if mean != nil {
		denormalizeChannels(image, mean, std)
	}

	ops := randAugmentOpsFor(img.channels)
	scratch := make([]float32, len(image))
	for range a.N {
		op := ops[uniformBelow(rng, uint64(len(ops)))]
		op.apply(img, op.draw(a.Magnitude, rng), a.Fill, scratch)
	}

	if mean != nil {
		normalizeChannels(image, mean, std)
	}
	return label, nil
}

// ParseRandAugment parses "N,M", as in "2,9", into the number of operations and the magnitude.
// The empty string means no RandAugment and returns 0, 0.
func ParseRandAugment(spec string) (n int, magnitude float64, err error) {
	if spec == "" {
		return 0, 0, nil
	}
	nText, mText, ok := strings.Cut(spec, ",")
	if !ok {
		return 0, 0, fmt.Errorf("invalid RandAugment %q: write N,M, for example 2,9", spec)
	}
	n, err = strconv.Atoi(strings.TrimSpace(nText))
	if err != nil || n < 1 {
		return 0, 0, fmt.Errorf("invalid RandAugment %q: N must be a whole number of operations, at least 1", spec)
	}
	magnitude, err = strconv.ParseFloat(strings.TrimSpace(mText), 64)
	if err != nil || !(magnitude >= 0 && magnitude <= MaxRandAugmentMagnitude) {
		return 0, 0, fmt.Errorf("invalid RandAugment %q: M must be a number in [0, %d]", spec, MaxRandAugmentMagnitude)
	}
	return n, magnitude, nil
}

// sourceNormalization returns the per-channel mean and standard deviation that the source's
// images are normalized with, or nil, nil when the source yields values in [0, 1] or is of a type
// that this package does not know.
func sourceNormalization(s Source) (mean, std []float32) {
	switch s := s.(type) {
	case *Dataset:
		if s.ChannelStd != nil {
			return s.ChannelMean, s.ChannelStd
		}
		if s.Std != 0 {
			mean, std = make([]float32, s.Channels), make([]float32, s.Channels)
			for c := range s.Channels {
				mean[c], std[c] = s.Mean, s.Std
			}
			return mean, std
		}
	case *PadCropFlip:
		return sourceNormalization(s.Dataset)
	case *FolderSource:
		return s.options.Mean, s.options.Std
	case *RandAugment:
		return sourceNormalization(s.Source)
	}
	return nil, nil
}

// denormalizeChannels undoes normalizeChannels: x -> x * std[c] + mean[c].
func denormalizeChannels(values, mean, std []float32) {
	channels := len(mean)
	for i := 0; i < len(values); i += channels {
		for c := range channels {
			values[i+c] = values[i+c]*std[c] + mean[c]
		}
	}
}

// floatImage is one HWC image with values in [0, 1], sharing memory with pix.
type floatImage struct {
	pix                     []float32
	height, width, channels int
}

// randAugmentOp is one operation of RandAugment.
type randAugmentOp struct {
	name string
	// level maps the magnitude M to the operation's parameter before the sign; nil for an
	// operation without a magnitude.
	level func(m float64) float64
	// signed operations negate the parameter with probability 1/2.
	signed bool
	// colorOnly operations run only on 3-channel images.
	colorOnly bool
	// apply transforms img in place. scratch has the length of img.pix.
	apply func(img floatImage, param float64, fill float32, scratch []float32)
}

// draw returns the operation's parameter at magnitude m, with a random sign when it is signed.
func (op randAugmentOp) draw(m float64, rng *rand.PCG) float64 {
	if op.level == nil {
		return 0
	}
	param := op.level(m)
	if op.signed && rng.Uint64()>>63 == 1 {
		param = -param
	}
	return param
}

// linearLevel returns the level function that reaches atTen at M = 10. It multiplies before it
// divides, so integer magnitudes give exact levels such as 9 * 30 / 10 = 27.
func linearLevel(atTen float64) func(float64) float64 {
	return func(m float64) float64 { return m * atTen / 10 }
}

// randAugmentOps are the 14 operations of RandAugment.
var randAugmentOps = []randAugmentOp{
	{name: "identity", apply: func(floatImage, float64, float32, []float32) {}},
	{name: "auto-contrast", apply: autoContrast},
	{name: "equalize", apply: equalize},
	{name: "rotate", level: linearLevel(30), signed: true, apply: rotate},
	{name: "solarize", level: linearLevel(1), apply: solarize},
	{name: "color", level: linearLevel(0.9), signed: true, colorOnly: true, apply: blendWithGrey},
	{name: "posterize", level: posterizeBits, apply: posterize},
	{name: "contrast", level: linearLevel(0.9), signed: true, apply: blendWithMean},
	{name: "brightness", level: linearLevel(0.9), signed: true, apply: brightness},
	{name: "sharpness", level: linearLevel(0.9), signed: true, apply: sharpness},
	{name: "shear-x", level: linearLevel(0.3), signed: true, apply: shearX},
	{name: "shear-y", level: linearLevel(0.3), signed: true, apply: shearY},
	{name: "translate-x", level: linearLevel(0.45), signed: true, apply: translateX},
	{name: "translate-y", level: linearLevel(0.45), signed: true, apply: translateY},
}

// randAugmentOpsFor returns the operations that apply to images with the given channel count.
func randAugmentOpsFor(channels int) []randAugmentOp {
	if channels == 3 {
		return randAugmentOps
	}
	ops := make([]randAugmentOp, 0, len(randAugmentOps))
	for _, op := range randAugmentOps {
		if !op.colorOnly {
			ops = append(ops, op)
		}
	}
	return ops
}

// randAugmentOpNamed returns the operation with the given name; it panics on an unknown name.
func randAugmentOpNamed(name string) randAugmentOp {
	for _, op := range randAugmentOps {
		if op.name == name {
			return op
		}
	}
	panic(fmt.Sprintf("datasets: unknown RandAugment operation %q; use one of %v", name, RandAugmentOps))
}

// Geometric operations. Each maps an output pixel centre, relative to the image centre, to the
// point of the input that it samples.

// rotate turns the image by param degrees counter-clockwise as displayed (y grows downwards).
func rotate(img floatImage, degrees float64, fill float32, scratch []float32) {
	sin, cos := math.Sincos(degrees * math.Pi / 180)
	warp(img, fill, scratch, func(x, y float64) (float64, float64) {
		return x*cos - y*sin, x*sin + y*cos
	})
}

// shearX moves row y by param * y pixels to the right, about the centre row.
func shearX(img floatImage, shear float64, fill float32, scratch []float32) {
	warp(img, fill, scratch, func(x, y float64) (float64, float64) { return x - shear*y, y })
}

// shearY moves column x by param * x pixels downwards, about the centre column.
func shearY(img floatImage, shear float64, fill float32, scratch []float32) {
	warp(img, fill, scratch, func(x, y float64) (float64, float64) { return x, y - shear*x })
}

// translateX moves the image right by param times its width.
func translateX(img floatImage, fraction float64, fill float32, scratch []float32) {
	dx := fraction * float64(img.width)
	warp(img, fill, scratch, func(x, y float64) (float64, float64) { return x - dx, y })
}

// translateY moves the image down by param times its height.
func translateY(img floatImage, fraction float64, fill float32, scratch []float32) {
	dy := fraction * float64(img.height)
	warp(img, fill, scratch, func(x, y float64) (float64, float64) { return x, y - dy })
}

// warp replaces each output pixel with the bilinear sample of the input at source(x, y), where
// (x, y) is the pixel's centre relative to the image centre. Neighbours outside the image count
// as fill.
func warp(img floatImage, fill float32, scratch []float32, source func(x, y float64) (float64, float64)) {
	h, w, c := img.height, img.width, img.channels
	copy(scratch, img.pix)
	centerX, centerY := float64(w)/2, float64(h)/2
	at := func(row, col, k int) float32 {
		if row < 0 || row >= h || col < 0 || col >= w {
			return fill
		}
		return scratch[(row*w+col)*c+k]
	}
	for row := range h {
		for col := range w {
			sx, sy := source(float64(col)+0.5-centerX, float64(row)+0.5-centerY)
			// Continuous input coordinates in which pixel (r, c) has its centre at (c, r).
			fx, fy := sx+centerX-0.5, sy+centerY-0.5
			x0, y0 := math.Floor(fx), math.Floor(fy)
			tx, ty := float32(fx-x0), float32(fy-y0)
			col0, row0 := int(x0), int(y0)
			out := img.pix[(row*w+col)*c : (row*w+col+1)*c]
			for k := range c {
				top := (1-tx)*at(row0, col0, k) + tx*at(row0, col0+1, k)
				bottom := (1-tx)*at(row0+1, col0, k) + tx*at(row0+1, col0+1, k)
				out[k] = (1-ty)*top + ty*bottom
			}
		}
	}
}

// Photometric operations.

// autoContrast stretches each channel linearly so that its minimum becomes 0 and its maximum 1.
// A constant channel stays as it is.
func autoContrast(img floatImage, _ float64, _ float32, _ []float32) {
	c := img.channels
	for k := range c {
		lo, hi := float32(math.Inf(1)), float32(math.Inf(-1))
		for i := k; i < len(img.pix); i += c {
			lo, hi = min(lo, img.pix[i]), max(hi, img.pix[i])
		}
		if !(hi > lo) {
			continue
		}
		scale := 1 / (hi - lo)
		for i := k; i < len(img.pix); i += c {
			img.pix[i] = (img.pix[i] - lo) * scale
		}
	}
}

// toLevel returns the 8-bit level of a value in [0, 1], rounded to the nearest and clamped.
func toLevel(v float32) int {
	return int(math.Round(float64(min(max(v, 0), 1)) * 255))
}

// equalize applies histogram equalization to each channel on 256 levels: level l becomes
// (cdf(l) - cdf_min) / (n - cdf_min), where cdf counts the values at or below l and cdf_min is the
// count of the lowest level present. A constant channel stays as it is.
func equalize(img floatImage, _ float64, _ float32, _ []float32) {
	c := img.channels
	n := len(img.pix) / c
	for k := range c {
		var histogram [256]int
		for i := k; i < len(img.pix); i += c {
			histogram[toLevel(img.pix[i])]++
		}
		cdfMin := 0
		for _, count := range histogram {
			if count > 0 {
				cdfMin = count
				break
			}
		}
		if cdfMin == n {
			continue
		}
		var mapped [256]float32
		cumulative := 0
		for level, count := range histogram {
			cumulative += count
			mapped[level] = float32(cumulative-cdfMin) / float32(n-cdfMin)
		}
		for i := k; i < len(img.pix); i += c {
			img.pix[i] = max(0, mapped[toLevel(img.pix[i])])
		}
	}
}

// solarize inverts every value above 1 - param, which leaves the image unchanged at param 0.
func solarize(img floatImage, param float64, _ float32, _ []float32) {
	threshold := float32(1 - min(param, 1))
	for i, v := range img.pix {
		if v > threshold {
			img.pix[i] = 1 - v
		}
	}
}

// posterizeBits is the level function of posterize: the bits kept, from 8 at M = 0 down to 4 at
// M = 10 and 1 from M = 17.5 on.
func posterizeBits(m float64) float64 {
	return max(1, 8-math.Floor(0.4*m))
}

// posterize keeps the top param bits of each value's 8-bit level.
func posterize(img floatImage, bits float64, _ float32, _ []float32) {
	mask := ^(1<<(8-int(bits)) - 1)
	for i, v := range img.pix {
		img.pix[i] = float32(toLevel(v)&mask) / 255
	}
}

// enhanceFactor returns the blend factor 1 + delta, at least 0.
func enhanceFactor(delta float64) float32 { return float32(max(0, 1+delta)) }

// blend sets v to base + factor * (v - base), clipped to [0, 1].
func blend(base, v, factor float32) float32 {
	return min(max(base+factor*(v-base), 0), 1)
}

// luma returns the grey level of one pixel: the ITU-R BT.601 luma of an RGB pixel, with the
// weights of Pillow's conversion to mode "L" (src/libImaging/Convert.c), or the mean of the
// channels otherwise.
func luma(pixel []float32) float32 {
	if len(pixel) == 3 {
		return 0.299*pixel[0] + 0.587*pixel[1] + 0.114*pixel[2]
	}
	var sum float32
	for _, v := range pixel {
		sum += v
	}
	return sum / float32(len(pixel))
}

// blendWithGrey is the color operation: it blends each pixel with its own grey level, so factor 0
// is greyscale and factor 2 doubles the saturation.
func blendWithGrey(img floatImage, delta float64, _ float32, _ []float32) {
	factor := enhanceFactor(delta)
	c := img.channels
	for i := 0; i < len(img.pix); i += c {
		pixel := img.pix[i : i+c]
		grey := luma(pixel)
		for k := range pixel {
			pixel[k] = blend(grey, pixel[k], factor)
		}
	}
}

// blendWithMean is the contrast operation: it blends every value with the mean grey level of the
// image, so factor 0 is a flat grey image.
func blendWithMean(img floatImage, delta float64, _ float32, _ []float32) {
	factor := enhanceFactor(delta)
	c := img.channels
	var sum float64
	for i := 0; i < len(img.pix); i += c {
		sum += float64(luma(img.pix[i : i+c]))
	}
	mean := float32(sum / float64(len(img.pix)/c))
	for i, v := range img.pix {
		img.pix[i] = blend(mean, v, factor)
	}
}

// brightness blends every value with black, which scales it by the factor.
func brightness(img floatImage, delta float64, _ float32, _ []float32) {
	factor := enhanceFactor(delta)
	for i, v := range img.pix {
		img.pix[i] = blend(0, v, factor)
	}
}

// sharpness blends the image with a smoothed copy of itself: factor 0 is the smoothed image and
// factors above 1 sharpen. The smoothing kernel is [1 1 1; 1 5 1; 1 1 1] / 13, and the pixels
// of the outer border keep their values.
func sharpness(img floatImage, delta float64, _ float32, scratch []float32) {
	factor := enhanceFactor(delta)
	h, w, c := img.height, img.width, img.channels
	if h < 3 || w < 3 {
		return
	}
	copy(scratch, img.pix)
	for row := 1; row < h-1; row++ {
		for col := 1; col < w-1; col++ {
			for k := range c {
				var sum float32
				for dy := -1; dy <= 1; dy++ {
					for dx := -1; dx <= 1; dx++ {
						sum += scratch[((row+dy)*w+col+dx)*c+k]
					}
				}
				center := scratch[(row*w+col)*c+k]
				smooth := (sum + 4*center) / 13
				img.pix[(row*w+col)*c+k] = blend(smooth, center, factor)
			}
		}
	}
}
