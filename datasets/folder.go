package datasets

import (
	"errors"
	"fmt"
	"image"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/image/draw"
)

// ImageNetMean and ImageNetStd are the per-channel RGB mean and standard deviation for values in
// [0, 1] that torchvision's documentation gives for its ImageNet-pretrained models. They were not
// measured by this package.
var (
	ImageNetMean = [3]float32{0.485, 0.456, 0.406}
	ImageNetStd  = [3]float32{0.229, 0.224, 0.225}
)

// Defaults of FolderOptions.
const (
	// DefaultCenterCropFraction is the fraction of the resized image's shorter side that
	// CenterCrop keeps: 224 of 256 pixels.
	DefaultCenterCropFraction = 0.875
)

// DefaultCropScale and DefaultCropAspectRatio are the ranges of RandomResizedCrop's area fraction
// and aspect ratio (width / height), as in the Inception training recipe and torchvision.
var (
	DefaultCropScale       = [2]float64{0.08, 1}
	DefaultCropAspectRatio = [2]float64{3.0 / 4, 4.0 / 3}
)

// imageExtensions are the file name extensions, in lower case, that a FolderSource lists.
var imageExtensions = []string{".jpg", ".jpeg", ".png"}

// Transform selects how a FolderSource turns an image into a Size x Size input.
type Transform int

const (
	// CenterCrop resizes the image so that its shorter side is Size / CenterCropFraction and
	// keeps the centred Size x Size square: the evaluation transform.
	CenterCrop Transform = iota
	// RandomResizedCrop cuts a random rectangle whose area fraction and aspect ratio lie in
	// Scale and AspectRatio, and resizes it to Size x Size: the training transform.
	RandomResizedCrop
)

// String returns "center-crop" or "random-resized-crop".
func (t Transform) String() string {
	switch t {
	case CenterCrop:
		return "center-crop"
	case RandomResizedCrop:
		return "random-resized-crop"
	}
	return fmt.Sprintf("Transform(%d)", int(t))
}

// DecodeErrorPolicy selects what a FolderSource does with a file it cannot decode.
type DecodeErrorPolicy int

const (
	// StopOnDecodeError makes Example return the *DecodeError, which stops a Pipeline.
	StopOnDecodeError DecodeErrorPolicy = iota
	// SkipUndecodable makes Example log a warning, count the file and produce the next file
	// in listing order instead, with its label. The next file is usually of the same class, and
	// the choice does not depend on timing, so batches stay deterministic.
	SkipUndecodable
)

// FolderOptions configures OpenFolder. Size is required; the zero value of every other field
// selects its default.
type FolderOptions struct {
	// Size is the side of the square images that the source produces, in pixels.
	Size int

	// Transform is CenterCrop (the default) or RandomResizedCrop.
	Transform Transform

	// Flip mirrors each image left to right with probability 1/2, drawn after the crop.
	Flip bool

	// Scale is the range of the area fraction for RandomResizedCrop: DefaultCropScale when zero.
	Scale [2]float64

	// AspectRatio is the range of the aspect ratio (width / height) for RandomResizedCrop:
	// DefaultCropAspectRatio when zero.
	AspectRatio [2]float64

	// CenterCropFraction is the fraction of the resized shorter side that CenterCrop keeps:
	// DefaultCenterCropFraction when zero.
	CenterCropFraction float64

	// Mean and Std normalize each RGB channel after the crop, x -> (x - Mean[c]) / Std[c], when
	// they are set (for example to ImageNetMean[:] and ImageNetStd[:]). Without them the values
	// stay in [0, 1].
	Mean, Std []float32

	// Kernel resamples the images: draw.BiLinear when nil. When they shrink an image, the kernels
	// of golang.org/x/image/draw widen by the scale factor so that every source pixel contributes,
	// which limits aliasing as an antialiased resize does.
	Kernel *draw.Kernel

	// OnDecodeError is StopOnDecodeError (the default) or SkipUndecodable.
	OnDecodeError DecodeErrorPolicy

	// Logger receives a warning for each skipped file: slog.Default() when nil.
	Logger *slog.Logger
}

// withDefaults returns the options with the defaults filled in, or an error naming an invalid one.
func (o FolderOptions) withDefaults() (FolderOptions, error) {
	if o.Size <= 0 {
		return o, fmt.Errorf("invalid image size %d: it must be positive, for example 224", o.Size)
	}
	if o.Transform != CenterCrop && o.Transform != RandomResizedCrop {
		return o, fmt.Errorf("invalid transform %v: use datasets.CenterCrop or datasets.RandomResizedCrop", o.Transform)
	}

	if o.OnDecodeError != StopOnDecodeError && o.OnDecodeError != SkipUndecodable {
		return o, fmt.Errorf("invalid decode error policy %d: use datasets.StopOnDecodeError or datasets.SkipUndecodable",
			int(o.OnDecodeError))
	}

	// Crop ranges.
	if o.Scale == [2]float64{} {
		o.Scale = DefaultCropScale
	}
	if !(o.Scale[0] > 0 && o.Scale[0] <= o.Scale[1] && o.Scale[1] <= 1) {
		return o, fmt.Errorf("invalid crop scale %v: it must be a range (min, max) with 0 < min <= max <= 1", o.Scale)
	}
	if o.AspectRatio == [2]float64{} {
		o.AspectRatio = DefaultCropAspectRatio
	}
	if !(o.AspectRatio[0] > 0 && o.AspectRatio[0] <= o.AspectRatio[1]) || o.AspectRatio[1] > 1e6 {
		return o, fmt.Errorf("invalid crop aspect ratio %v: it must be a range (min, max) with 0 < min <= max", o.AspectRatio)
	}
	if o.CenterCropFraction == 0 {
		o.CenterCropFraction = DefaultCenterCropFraction
	}
	if !(o.CenterCropFraction > 0 && o.CenterCropFraction <= 1) {
		return o, fmt.Errorf("invalid centre crop fraction %g: it must be in (0, 1], for example 0.875", o.CenterCropFraction)
	}

	// Normalization.
	if (o.Mean == nil) != (o.Std == nil) {
		return o, fmt.Errorf("invalid normalization: set both Mean and Std, or neither")
	}
	if o.Mean != nil {
		if len(o.Mean) != 3 || len(o.Std) != 3 {
			return o, fmt.Errorf("invalid normalization: got %d means and %d stds; pass one of each per RGB channel",
				len(o.Mean), len(o.Std))
		}
		if err := checkChannelStats(o.Mean, o.Std); err != nil {
			return o, fmt.Errorf("invalid normalization: %w", err)
		}
		o.Mean, o.Std = slices.Clone(o.Mean), slices.Clone(o.Std)
	}

	if o.Kernel == nil {
		o.Kernel = draw.BiLinear
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o, nil
}

// FolderSource is a Source over an ImageNet-style folder: root/train/<class>/*.jpg for the
// training split and root/val/<class>/*.jpg for the test split. It stores the list of files and
// labels, and each call to Example decodes, crops and resizes one image.
//
// The class index is the sorted list of the class directory names under root/train, the same for
// both splits.
type FolderSource struct {
	root, dir  string // dir is root/train or root/val
	split      Split
	classNames []string
	names      []string // file names within their class directory
	labels     []int32
	options    FolderOptions

	buffers sync.Pool // *image.RGBA of Size x Size, reused across examples

	skippedCount atomic.Int64
	skippedMu    sync.Mutex
	skipped      map[int]bool // indices of the files found undecodable
}

// OpenFolder lists the images of split under root: Train reads root/train and Test reads root/val.
// It returns an error naming the directory when a split directory has no class directories or a
// class directory has no image files, and naming the class when root/val has a class that
// root/train lacks. Files whose names do not end in .jpg, .jpeg or .png (in any case),
// subdirectories of class directories, and names that start with "." are ignored.
func OpenFolder(root string, split Split, options FolderOptions) (*FolderSource, error) {
	options, err := options.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("opening image folder %s: %w", root, err)
	}
	dirName, err := folderSplitDir(split)
	if err != nil {
		return nil, err
	}
	classNames, err := FolderClasses(root)
	if err != nil {
		return nil, err
	}

	f := &FolderSource{
		root:       root,
		dir:        filepath.Join(root, dirName),
		split:      split,
		classNames: classNames,
		options:    options,
		skipped:    map[int]bool{},
	}
	splitClasses, err := listClassDirs(f.dir)
	if err != nil {
		return nil, err
	}
	for _, class := range splitClasses {
		label, found := slices.BinarySearch(classNames, class)
		if !found {
			return nil, fmt.Errorf("class %q of %s is not a class of the training split %s; "+
				"every class directory of %s/ must also exist under train/",
				class, f.dir, filepath.Join(root, "train"), dirName)
		}
		classDir := filepath.Join(f.dir, class)
		names, err := listImageFiles(classDir)
		if err != nil {
			return nil, err
		}
		for _, name := range names {
			f.names = append(f.names, name)
			f.labels = append(f.labels, int32(label))
		}
	}
	size := options.Size
	f.buffers.New = func() any { return image.NewRGBA(image.Rect(0, 0, size, size)) }
	return f, nil
}

// folderSplitDir returns the name of split's directory in an ImageNet-style folder.
func folderSplitDir(split Split) (string, error) {
	switch split {
	case Train:
		return "train", nil
	case Test:
		return "val", nil
	}
	return "", fmt.Errorf("invalid split %d: use datasets.Train or datasets.Test", int(split))
}

// FolderClasses returns the class index of the ImageNet-style folder at root: the sorted names of
// the directories under root/train.
func FolderClasses(root string) ([]string, error) {
	return listClassDirs(filepath.Join(root, "train"))
}

// listClassDirs returns the sorted names of the directories in dir, following symbolic links and
// ignoring names that start with ".". No directories is an error naming dir.
func listClassDirs(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("image folder split %s not found; the layout is root/train/<class>/*.jpg and root/val/<class>/*.jpg: %w",
				dir, err)
		}
		return nil, fmt.Errorf("listing image folder split: %w", err)
	}
	var classes []string
	files := 0
	for _, entry := range entries {
		if strings.HasPrefix(entry.Name(), ".") {
			continue
		}
		isDir, err := isDirectory(dir, entry)
		if err != nil {
			return nil, err
		}
		if isDir {
			classes = append(classes, entry.Name())
		} else {
			files++
		}
	}
	if len(classes) == 0 {
		hint := ""
		if files > 0 {
			hint = fmt.Sprintf(" but %d files: move the images into one directory per class", files)
		}
		return nil, fmt.Errorf("image folder split %s is empty: it has no class directories%s", dir, hint)
	}
	slices.Sort(classes) // os.ReadDir sorts by name already; this states the contract here
	return classes, nil
}

// isDirectory reports whether entry of dir is a directory, or a symbolic link to one.
func isDirectory(dir string, entry fs.DirEntry) (bool, error) {
	if entry.Type()&fs.ModeSymlink == 0 {
		return entry.IsDir(), nil
	}
	info, err := os.Stat(filepath.Join(dir, entry.Name()))
	if err != nil {
		return false, fmt.Errorf("following symbolic link in image folder: %w", err)
	}
	return info.IsDir(), nil
}

// listImageFiles returns the sorted names of the JPEG and PNG files in classDir. None is an error
// naming classDir.
func listImageFiles(classDir string) ([]string, error) {
	entries, err := os.ReadDir(classDir)
	if err != nil {
		return nil, fmt.Errorf("listing class directory: %w", err)
	}
	var names []string
	for _, entry := range entries {
		name := entry.Name()
		if strings.HasPrefix(name, ".") || !slices.Contains(imageExtensions, strings.ToLower(filepath.Ext(name))) {
			continue
		}
		isDir, err := isDirectory(classDir, entry)
		if err != nil {
			return nil, err
		}
		if !isDir {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("class directory %s is empty: it has no .jpg, .jpeg or .png files", classDir)
	}
	return names, nil
}

// Len returns the number of image files.
func (f *FolderSource) Len() int { return len(f.names) }

// ExampleShape returns [Size, Size, 3].
func (f *FolderSource) ExampleShape() [3]int { return [3]int{f.options.Size, f.options.Size, 3} }

// String returns the split's directory.
func (f *FolderSource) String() string { return f.dir }

// Split returns the split that the source lists.
func (f *FolderSource) Split() Split { return f.split }

// ClassNames returns the class index: the name of each label. The slice must not be modified.
func (f *FolderSource) ClassNames() []string { return f.classNames }

// Labels returns the label of each file, in listing order. The slice must not be modified.
func (f *FolderSource) Labels() []int32 { return f.labels }

// Path returns the path of file i.
func (f *FolderSource) Path(i int) string {
	return filepath.Join(f.dir, f.classNames[f.labels[i]], f.names[i])
}

// ImageSize returns the width and height of image i from its header, without decoding the pixels.
func (f *FolderSource) ImageSize(i int) (image.Point, error) {
	file, err := os.Open(f.Path(i))
	if err != nil {
		return image.Point{}, fmt.Errorf("reading image size: %w", err)
	}
	defer file.Close()
	config, _, err := image.DecodeConfig(file)
	if err != nil {
		return image.Point{}, &DecodeError{Path: f.Path(i), Err: err}
	}
	return image.Pt(config.Width, config.Height), nil
}

// Skipped returns the number of distinct files that Example has skipped because they could not
// be decoded.
func (f *FolderSource) Skipped() int { return int(f.skippedCount.Load()) }

// SkippedPaths returns the paths of the files that Example has skipped, in listing order.
func (f *FolderSource) SkippedPaths() []string {
	f.skippedMu.Lock()
	defer f.skippedMu.Unlock()
	indices := make([]int, 0, len(f.skipped))
	for i := range f.skipped {
		indices = append(indices, i)
	}
	slices.Sort(indices)
	paths := make([]string, len(indices))
	for k, i := range indices {
		paths[k] = f.Path(i)
	}
	return paths
}

// Example decodes image i, crops and resizes it to Size x Size with the source's transform,
// writes its RGB values into image and returns its label. RandomResizedCrop draws the crop from
// rng, and then Flip draws the flip.
//
// A file that cannot be read is an error. With StopOnDecodeError, a file that cannot be decoded is
// a *DecodeError. With SkipUndecodable, the source logs and counts such a file. It then produces
// the next file in listing order in its place, wrapping around at the end, with that file's label.
func (f *FolderSource) Example(i int, rng *rand.PCG, out []float32) (int32, error) {
	n := len(f.names)
	for attempt := range n {
		j := (i + attempt) % n
		if f.isSkipped(j) {
			continue
		}
		img, err := DecodeImageFile(f.Path(j))
		var decodeErr *DecodeError
		if errors.As(err, &decodeErr) && f.options.OnDecodeError == SkipUndecodable {
			f.skip(j, decodeErr)
			continue
		}
		if err != nil {
			return 0, err
		}
		// The failed attempts drew nothing from rng, so the draws below depend only on rng's seed.
		f.transform(img, rng, out)
		return f.labels[j], nil
	}
	return 0, fmt.Errorf("none of the %d images of %s could be decoded", n, f.dir)
}

// isSkipped reports whether file j was found undecodable before.
func (f *FolderSource) isSkipped(j int) bool {
	if f.skippedCount.Load() == 0 {
		return false
	}
	f.skippedMu.Lock()
	defer f.skippedMu.Unlock()
	return f.skipped[j]
}

// skip records that file j cannot be decoded and logs a warning the first time.
func (f *FolderSource) skip(j int, err *DecodeError) {
	f.skippedMu.Lock()
	first := !f.skipped[j]
	f.skipped[j] = true
	f.skippedMu.Unlock()
	if first {
		count := f.skippedCount.Add(1)
		f.options.Logger.Warn("skipping undecodable image", "path", err.Path, "error", err.Err, "skipped", count)
	}
}

// transform crops and resizes img with the source's options and writes the result into out.
func (f *FolderSource) transform(img image.Image, rng *rand.PCG, out []float32) {
	src := opaqueRGB(img)
	bounds := src.Bounds()
	size := f.options.Size
	dst := f.buffers.Get().(*image.RGBA)
	defer f.buffers.Put(dst)

	switch f.options.Transform {
	case RandomResizedCrop:
		dst.Rect = image.Rect(0, 0, size, size)
		crop := randomResizedCrop(bounds.Dx(), bounds.Dy(), rng, f.options.Scale, f.options.AspectRatio)
		scaleTo(dst, src, crop, f.options.Kernel)
	case CenterCrop:
		// dst takes the bounds of the crop within the resized image, so that the scaler computes
		// only the pixels that the crop keeps.
		resized, crop := centerCropGeometry(bounds.Dx(), bounds.Dy(), size, f.options.CenterCropFraction)
		dst.Rect = crop
		if resized == bounds.Size() {
			draw.Draw(dst, crop, src, bounds.Min.Add(crop.Min), draw.Src)
		} else {
			f.options.Kernel.Scale(dst, image.Rectangle{Max: resized}, src, bounds, draw.Src, nil)
		}
	}

	flip := f.options.Flip && rng.Uint64()>>63 == 1
	rgbaToFloats(dst, flip, out)
	if f.options.Mean != nil {
		normalizeChannels(out, f.options.Mean, f.options.Std)
	}
}
