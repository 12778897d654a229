package datasets

import (
	"fmt"
	"math/rand/v2"
)

// Source is a dataset whose examples a Pipeline produces one at a time, possibly with random
// augmentation. *Dataset, *PadCropFlip and *FolderSource implement it.
//
// Example may be called from several goroutines at once, with different image slices.
type Source interface {
	// Len returns the number of examples.
	Len() int

	// ExampleShape returns the shape of one example's image: [height, width, channels].
	ExampleShape() [3]int

	// Example writes the image of example i into image, which has height*width*channels values
	// laid out HWC, and returns the example's label. Random choices, such as a crop or a flip,
	// must be drawn from rng alone, so that the example depends only on i and the state of rng.
	Example(i int, rng *rand.PCG, image []float32) (label int32, err error)
}

// ExampleShape returns [Height, Width, Channels].
func (d *Dataset) ExampleShape() [3]int { return [3]int{d.Height, d.Width, d.Channels} }

// Example copies the image of example i into image and returns its label. It draws nothing from
// rng, which may be nil.
func (d *Dataset) Example(i int, _ *rand.PCG, image []float32) (int32, error) {
	copy(image, d.Image(i))
	return d.Labels[i], nil
}

// PadCropFlip is a Source that augments the examples of an in-memory Dataset. It pads each image
// with Pad zeros on every side and takes a random crop of the original size. With Flip, it then
// mirrors the crop left to right with probability 1/2. With Pad 4 and Flip it is the usual CIFAR
// training augmentation.
//
// The padding is 0, which is black in images with values in [0, 1] and the mean colour in
// images normalized with the dataset's mean.
type PadCropFlip struct {
	Dataset *Dataset
	Pad     int
	Flip    bool
}

// Len returns the number of examples of the dataset.
func (a *PadCropFlip) Len() int { return a.Dataset.Len() }

// ExampleShape returns the shape of the dataset's images, which the crop keeps.
func (a *PadCropFlip) ExampleShape() [3]int { return a.Dataset.ExampleShape() }

// String returns the name of the dataset.
func (a *PadCropFlip) String() string { return a.Dataset.String() }

// Example writes a random crop of the padded image i into image and returns its label. It draws
// the vertical offset, then the horizontal offset, then the flip from rng.
func (a *PadCropFlip) Example(i int, rng *rand.PCG, image []float32) (int32, error) {
	d := a.Dataset
	if a.Pad < 0 {
		return 0, fmt.Errorf("invalid padding %d for %s: it must be 0 or more", a.Pad, d)
	}
	h, w, c := d.Height, d.Width, d.Channels
	dy := int(uniformBelow(rng, uint64(2*a.Pad+1))) - a.Pad
	dx := int(uniformBelow(rng, uint64(2*a.Pad+1))) - a.Pad
	flip := a.Flip && rng.Uint64()>>63 == 1

	// Output pixel (y, x) is source pixel (y+dy, x+dx), or 0 where that falls in the padding.
	// With the flip, output pixel (y, x) is the crop's pixel (y, w-1-x).
	source := d.Image(i)
	xStart, xEnd := max(0, -dx), min(w, w-dx) // output columns of the unflipped crop inside the image
	for y := range h {
		row := image[y*w*c : (y+1)*w*c]
		sy := y + dy
		if sy < 0 || sy >= h || xStart >= xEnd {
			clear(row)
			continue
		}
		sourceRow := source[sy*w*c : (sy+1)*w*c]
		if !flip {
			clear(row[:xStart*c])
			copy(row[xStart*c:xEnd*c], sourceRow[(xStart+dx)*c:(xEnd+dx)*c])
			clear(row[xEnd*c:])
			continue
		}
		// Crop column x lands in output column w-1-x.
		clear(row[(w-xStart)*c:])
		clear(row[:(w-xEnd)*c])
		for x := xStart; x < xEnd; x++ {
			out := (w - 1 - x) * c
			in := (x + dx) * c
			for k := range c {
				row[out+k] = sourceRow[in+k]
			}
		}
	}
	return d.Labels[i], nil
}

// seedExampleRand seeds rng for example index of epoch in a run with seed. The state depends on
// these three numbers only, so a worker pool gives each example the same random draws whichever
// worker produces it and in whatever order. The stream differs from the one epochOrder draws the
// shuffle from, whose first seed word is seed itself.
func seedExampleRand(rng *rand.PCG, seed uint64, epoch, index int) {
	// An arbitrary constant: the first 64 bits of the fractional part of sqrt(2).
	const augmentStream = 0x6a09e667f3bcc908
	rng.Seed(mix64(seed^augmentStream)^mix64(uint64(epoch)), mix64(uint64(index)^augmentStream))
}

// uniformFloat64 returns a uniform draw from [0, 1) with 53 random bits.
func uniformFloat64(rng *rand.PCG) float64 {
	return float64(rng.Uint64()>>11) * 0x1p-53
}
