package datasets

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Layout of the CIFAR binary files: each record is the label bytes followed by a 32x32 colour
// image as three planes, red then green then blue, each 1024 bytes in row-major order.
const (
	cifarSide       = 32
	cifarPlaneSize  = cifarSide * cifarSide
	cifarImageSize  = 3 * cifarPlaneSize
	cifar10Record   = 1 + cifarImageSize // label
	cifar100Record  = 2 + cifarImageSize // coarse label, fine label
	cifar10Dir      = "cifar-10-batches-bin"
	cifar100Dir     = "cifar-100-binary"
	cifarDownloadAt = "https://www.cs.toronto.edu/~kriz/cifar.html"
)

// Per-channel RGB mean and standard deviation of the CIFAR training splits scaled to [0, 1], for
// Dataset.NormalizeChannels. These are one commonly published set (others differ in the fourth
// decimal). They were not measured by this package, because the datasets could not be downloaded
// where it was written. Dataset.PixelMeanStdPerChannel computes them from a loaded training split.
var (
	CIFAR10Mean  = [3]float32{0.4914, 0.4822, 0.4465}
	CIFAR10Std   = [3]float32{0.2470, 0.2435, 0.2616}
	CIFAR100Mean = [3]float32{0.5071, 0.4865, 0.4409}
	CIFAR100Std  = [3]float32{0.2673, 0.2564, 0.2762}
)

// CIFAR10Classes are the names of the CIFAR-10 labels 0 to 9. The loader prefers the names in
// batches.meta.txt, which ships with the binary version, when that file is present.
var CIFAR10Classes = []string{
	"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
}

// CIFAR100FineClasses are the names of the 100 fine CIFAR-100 labels, in label order
// (alphabetical). The loader prefers the names in fine_label_names.txt, which ships with the
// binary version, when that file is present.
var CIFAR100FineClasses = []string{
	"apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
	"bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
	"chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
	"dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
	"lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
	"mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
	"plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
	"rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
	"squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
	"train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
}

// CIFAR100CoarseClasses are the names of the 20 coarse CIFAR-100 labels (superclasses), in label
// order (alphabetical). The loader prefers the names in coarse_label_names.txt when present.
var CIFAR100CoarseClasses = []string{
	"aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
	"household_electrical_devices", "household_furniture", "insects", "large_carnivores",
	"large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
	"medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
	"vehicles_1", "vehicles_2",
}

// CIFAR100Labels selects which of the two labels of a CIFAR-100 record a Dataset uses.
type CIFAR100Labels int

const (
	// CIFAR100Fine selects the 100 fine classes.
	CIFAR100Fine CIFAR100Labels = iota
	// CIFAR100Coarse selects the 20 coarse classes (superclasses).
	CIFAR100Coarse
)

// LoadCIFAR10 loads one split of CIFAR-10 from the binary version's files: data_batch_1.bin to
// data_batch_5.bin for Train and test_batch.bin for Test. dir is the directory that contains them,
// or the one that contains their directory cifar-10-batches-bin, as the archive unpacks.
func LoadCIFAR10(dir string, split Split) (*Dataset, error) {
	var files []string
	switch split {
	case Train:
		for i := 1; i <= 5; i++ {
			files = append(files, fmt.Sprintf("data_batch_%d.bin", i))
		}
	case Test:
		files = []string{"test_batch.bin"}
	default:
		return nil, fmt.Errorf("invalid split %d: use datasets.Train or datasets.Test", int(split))
	}
	dir, err := findCIFARDir("cifar10", dir, cifar10Dir, files[0])
	if err != nil {
		return nil, err
	}
	classNames, err := readClassNames(filepath.Join(dir, "batches.meta.txt"), CIFAR10Classes)
	if err != nil {
		return nil, fmt.Errorf("loading cifar10: %w", err)
	}
	d := &Dataset{Name: "cifar10", Split: split, Height: cifarSide, Width: cifarSide, Channels: 3, ClassNames: classNames}
	for _, name := range files {
		if err := appendCIFARFile(d, filepath.Join(dir, name), cifar10Record, 0); err != nil {
			return nil, fmt.Errorf("loading cifar10: %w", err)
		}
	}
	return d, nil
}

// LoadCIFAR100 loads one split of CIFAR-100 from the binary version's files train.bin and
// test.bin, with the fine or the coarse labels. dir is the directory that contains them, or the
// one that contains their directory cifar-100-binary. The dataset is named "cifar100" with fine labels
// and "cifar100-coarse" with coarse ones.
func LoadCIFAR100(dir string, split Split, labels CIFAR100Labels) (*Dataset, error) {
	var file string
	switch split {
	case Train:
		file = "train.bin"
	case Test:
		file = "test.bin"
	default:
		return nil, fmt.Errorf("invalid split %d: use datasets.Train or datasets.Test", int(split))
	}
	name, namesFile, defaultNames, labelByte := "cifar100", "fine_label_names.txt", CIFAR100FineClasses, 1
	switch labels {
	case CIFAR100Fine:
	case CIFAR100Coarse:
		name, namesFile, defaultNames, labelByte = "cifar100-coarse", "coarse_label_names.txt", CIFAR100CoarseClasses, 0
	default:
		return nil, fmt.Errorf("invalid CIFAR-100 label kind %d: use datasets.CIFAR100Fine or datasets.CIFAR100Coarse", int(labels))
	}

	dir, err := findCIFARDir(name, dir, cifar100Dir, file)
	if err != nil {
		return nil, err
	}
	classNames, err := readClassNames(filepath.Join(dir, namesFile), defaultNames)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", name, err)
	}

	d := &Dataset{Name: name, Split: split, Height: cifarSide, Width: cifarSide, Channels: 3, ClassNames: classNames}
	if err := appendCIFARFile(d, filepath.Join(dir, file), cifar100Record, labelByte); err != nil {
		return nil, fmt.Errorf("loading %s: %w", name, err)
	}
	return d, nil
}

// findCIFARDir returns dir/subdir when it contains the file probe, and dir otherwise, or an error
// saying where the files were looked for.
func findCIFARDir(name, dir, subdir, probe string) (string, error) {
	fix := fmt.Sprintf("download the binary version from %s, unpack it, and pass -data-dir with the directory that contains %s",
		cifarDownloadAt, subdir)
	if dir == "" {
		return "", fmt.Errorf("loading %s: no data directory given; %s", name, fix)
	}
	candidates := []string{filepath.Join(dir, subdir), dir}
	for _, candidate := range candidates {
		if _, err := os.Stat(filepath.Join(candidate, probe)); err == nil {
			return candidate, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("loading %s: %w", name, err)
		}
	}
	return "", fmt.Errorf("loading %s: %s not found in %s nor in %s; %s: %w",
		name, probe, candidates[0], candidates[1], fix, fs.ErrNotExist)
}

// readClassNames returns the non-empty lines of path, which must number len(defaults), or a copy
// of defaults when path does not exist.
func readClassNames(path string, defaults []string) ([]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return slices.Clone(defaults), nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading class names: %w", err)
	}
	defer f.Close()
	var names []string
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		if line := strings.TrimSpace(scanner.Text()); line != "" {
			names = append(names, line)
		}
	}
	if err := scanner.Err(); err != nil {
		return nil, fmt.Errorf("reading class names from %s: %w", path, err)
	}
	if len(names) != len(defaults) {
		return nil, fmt.Errorf("class names file %s has %d names, expected %d; restore it from the dataset archive or delete it to use the built-in names",
			path, len(names), len(defaults))
	}
	return names, nil
}

// appendCIFARFile appends the records of the CIFAR binary file at path to d: labels from byte
// labelByte of each record of recordSize bytes, and pixels converted from planes to HWC in [0, 1].
func appendCIFARFile(d *Dataset, path string, recordSize, labelByte int) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading CIFAR file: %w", err)
	}
	if len(data) == 0 || len(data)%recordSize != 0 {
		return fmt.Errorf("CIFAR file %s has %d bytes, not a whole positive number of %d-byte records; it is truncated or of the other CIFAR version: download or unpack it again",
			path, len(data), recordSize)
	}

	numRecords := len(data) / recordSize
	d.Labels = slices.Grow(d.Labels, numRecords)
	d.Images = slices.Grow(d.Images, numRecords*cifarImageSize)
	for r := range numRecords {
		record := data[r*recordSize : (r+1)*recordSize]
		label := record[labelByte]
		if int(label) >= len(d.ClassNames) {
			return fmt.Errorf("CIFAR file %s: label %d of record %d is out of range: %s has %d classes",
				path, label, r, d.Name, len(d.ClassNames))
		}
		d.Labels = append(d.Labels, int32(label))

		// Pixel (y, x) of channel c is plane byte c*1024 + y*32 + x.
		planes := record[recordSize-cifarImageSize:]
		for p := range cifarPlaneSize {
			d.Images = append(d.Images,
				byteToUnit[planes[p]], byteToUnit[planes[cifarPlaneSize+p]], byteToUnit[planes[2*cifarPlaneSize+p]])
		}
	}
	return nil
}
