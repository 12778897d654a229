// Command inspect prints the class index of a dataset and the number of examples of each class in
// each split. It also writes a grid of sample images as the model receives them, after the
// training augmentation with -augment:
//
//	go run ./cmd/inspect -dataset fashion-mnist -grid /tmp/fashion.png
//	go run ./cmd/inspect -dataset cifar10 -data-dir ~/data -augment -grid /tmp/cifar10.png
//	go run ./cmd/inspect -dataset folder -data-dir ~/imagenet -split test -size 224 -grid /tmp/val.png
package main

import (
	"errors"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/looksam/vitsam/datasets"
)

// datasetNames are the values of -dataset.
var datasetNames = []string{"fashion-mnist", "mnist", "cifar10", "cifar100", "folder"}

// config is the parsed command line.
type config struct {
	dataset, dataDir, split string
	augment                 bool
	grid                    string
	gridSize                int
	seed                    uint64
	workers                 int
	size                    int    // folder only
	skipUndecodable         bool   // folder only
	cifar100Labels          string // cifar100 only
	sizeSample              int    // folder only
}

// parseFlags parses and checks the command line.
func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.dataset, "dataset", "fashion-mnist", "dataset: "+strings.Join(datasetNames, ", "))
	fs.StringVar(&c.dataDir, "data-dir", "", "directory of the dataset's files; required for cifar10, cifar100 and folder "+
		"(default: "+datasets.DefaultFashionMNISTDir+" for fashion-mnist, the GoMNIST module for mnist)")
	fs.StringVar(&c.split, "split", "train", "split to draw the grid from: train or test (test is val/ of a folder)")
	fs.BoolVar(&c.augment, "augment", false, "apply the training augmentation to the grid: random crop of the zero-padded image "+
		"(and flip, except for mnist) for in-memory datasets, random resized crop and flip for folders")
	fs.StringVar(&c.grid, "grid", "", "path of the PNG file to write the grid of samples to; no grid when empty")
	fs.IntVar(&c.gridSize, "grid-size", 8, "number of images per row and per column of the grid, 1 to 32")
	fs.Uint64Var(&c.seed, "seed", 1, "seed of the shuffle and the augmentation that pick the grid's images")
	fs.IntVar(&c.workers, "workers", 0, "goroutines that decode and augment the grid's images; 0 means one per CPU")
	fs.IntVar(&c.size, "size", 224, "side in pixels of the images a folder source produces (folder only)")
	fs.BoolVar(&c.skipUndecodable, "skip-undecodable", false, "skip images that cannot be decoded, with a warning, instead of stopping (folder only)")
	fs.StringVar(&c.cifar100Labels, "cifar100-labels", "fine", "CIFAR-100 labels: fine (100 classes) or coarse (20) (cifar100 only)")
	fs.IntVar(&c.sizeSample, "size-sample", 256, "number of files, spread over the split, whose image sizes are read and summarized (folder only)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}

	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected arguments %q: inspect takes flags only", fs.Args())
	case !slices.Contains(datasetNames, c.dataset):
		return nil, fmt.Errorf("invalid -dataset %q: use %s", c.dataset, strings.Join(datasetNames, ", "))
	case c.split != "train" && c.split != "test":
		return nil, fmt.Errorf("invalid -split %q: use train or test", c.split)
	case c.dataDir == "" && (c.dataset == "cifar10" || c.dataset == "cifar100" || c.dataset == "folder"):
		return nil, fmt.Errorf("missing -data-dir: -dataset %s needs the directory that contains its files", c.dataset)
	case c.grid != "" && !strings.EqualFold(filepath.Ext(c.grid), ".png"):
		return nil, fmt.Errorf("invalid -grid %q: the grid is written as PNG, so the file name must end in .png", c.grid)
	case c.gridSize < 1 || c.gridSize > 32:
		return nil, fmt.Errorf("invalid -grid-size %d: it must be 1 to 32", c.gridSize)
	case c.workers < 0:
		return nil, fmt.Errorf("invalid -workers %d: it must be positive, or 0 for one per CPU", c.workers)
	case c.size <= 0:
		return nil, fmt.Errorf("invalid -size %d: it must be positive, for example 224", c.size)
	case c.sizeSample < 0:
		return nil, fmt.Errorf("invalid -size-sample %d: it must be 0 or more", c.sizeSample)
	case c.cifar100Labels != "fine" && c.cifar100Labels != "coarse":
		return nil, fmt.Errorf("invalid -cifar100-labels %q: use fine or coarse", c.cifar100Labels)
	}
	onlyFor := map[string]string{"size": "folder", "skip-undecodable": "folder", "size-sample": "folder", "cifar100-labels": "cifar100"}
	for name, dataset := range onlyFor {
		if set[name] && c.dataset != dataset {
			return nil, fmt.Errorf("-%s applies only to -dataset %s, not %s", name, dataset, c.dataset)
		}
	}
	return c, nil
}

func main() {
	c, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err == nil {
		err = run(c, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "inspect:", err)
		os.Exit(1)
	}
}

// splitInfo describes one split of a dataset.
type splitInfo struct {
	split  datasets.Split
	labels []int32
	source datasets.Source // examples for the grid
	err    error           // the error that kept the split from loading, or nil
}

// run loads the dataset, prints its description and writes the grid.
func run(c *config, stdout io.Writer) error {
	split := datasets.Train
	if c.split == "test" {
		split = datasets.Test
	}

	var splits [2]splitInfo
	var classNames []string
	var shapeLine string
	if c.dataset == "folder" {
		sources, errs := openFolder(c)
		if errs[split] != nil {
			return errs[split]
		}
		for s, source := range sources {
			splits[s] = splitInfo{split: datasets.Split(s), err: errs[s]}
			if source != nil {
				splits[s].labels, splits[s].source = source.Labels(), source
			}
		}
		classNames = sources[split].ClassNames()
		shapeLine = fmt.Sprintf("%dx%dx3 after the %s", c.size, c.size, transformOf(c))
	} else {
		for s := range splits {
			d, err := loadInMemory(c, datasets.Split(s))
			if err != nil {
				return err
			}
			splits[s] = splitInfo{split: datasets.Split(s), labels: d.Labels, source: inMemorySource(c, d)}
			classNames = d.ClassNames
			shapeLine = fmt.Sprintf("%dx%dx%d", d.Height, d.Width, d.Channels)
		}
	}

	fmt.Fprintf(stdout, "dataset: %s", c.dataset)
	if c.dataDir != "" {
		fmt.Fprintf(stdout, " from %s", c.dataDir)
	}
	fmt.Fprintf(stdout, "\nimage size (height x width x channels): %s\n", shapeLine)
	if c.dataset == "folder" {
		if err := printSourceSizes(stdout, splits[split].source.(*datasets.FolderSource), c.sizeSample); err != nil {
			return err
		}
	}
	printCounts(stdout, classNames, splits[:])

	if c.grid == "" {
		return nil
	}
	return writeGrid(c, stdout, splits[split].source, classNames)
}

// loadInMemory loads one split of an IDX or CIFAR dataset.
func loadInMemory(c *config, split datasets.Split) (*datasets.Dataset, error) {
	switch c.dataset {
	case "fashion-mnist":
		return datasets.LoadFashionMNIST(c.dataDir, split)
	case "mnist":
		return datasets.LoadMNIST(c.dataDir, split)
	case "cifar10":
		return datasets.LoadCIFAR10(c.dataDir, split)
	case "cifar100":
		labels := datasets.CIFAR100Fine
		if c.cifar100Labels == "coarse" {
			labels = datasets.CIFAR100Coarse
		}
		return datasets.LoadCIFAR100(c.dataDir, split, labels)
	}
	return nil, fmt.Errorf("invalid -dataset %q", c.dataset)
}

// inMemorySource returns d, or with -augment d behind the random crop of the zero-padded image
// that training uses. The padding is 4 pixels for 32x32 CIFAR images and 2 for 28x28 (M)NIST ones.
// The crop is flipped left to right except for digits, which a flip turns into other shapes.
func inMemorySource(c *config, d *datasets.Dataset) datasets.Source {
	if !c.augment {
		return d
	}
	pad := 2
	if c.dataset == "cifar10" || c.dataset == "cifar100" {
		pad = 4
	}
	return &datasets.PadCropFlip{Dataset: d, Pad: pad, Flip: c.dataset != "mnist"}
}

// transformOf describes the folder transform that the flags select.
func transformOf(c *config) string {
	if c.augment {
		return "random resized crop and flip"
	}
	return "resize and centre crop"
}

// openFolder opens both splits of an image folder, returning for each the source or the error.
func openFolder(c *config) (sources [2]*datasets.FolderSource, errs [2]error) {
	options := datasets.FolderOptions{Size: c.size}
	if c.augment {
		options.Transform, options.Flip = datasets.RandomResizedCrop, true
	}
	if c.skipUndecodable {
		options.OnDecodeError = datasets.SkipUndecodable
		options.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	for s := range sources {
		sources[s], errs[s] = datasets.OpenFolder(c.dataDir, datasets.Split(s), options)
	}
	return sources, errs
}

// printSourceSizes prints the smallest, median and largest width and height over up to sample
// files spread evenly over the source's listing, read from the file headers.
func printSourceSizes(w io.Writer, source *datasets.FolderSource, sample int) error {
	n := min(sample, source.Len())
	if n == 0 {
		return nil
	}
	var widths, heights []int
	unreadable := 0
	for k := range n {
		size, err := source.ImageSize(k * source.Len() / n)
		var decodeErr *datasets.DecodeError
		if errors.As(err, &decodeErr) {
			unreadable++
			continue
		}
		if err != nil {
			return err
		}
		widths, heights = append(widths, size.X), append(heights, size.Y)
	}
	fmt.Fprintf(w, "source image sizes over %d of the %d files of %s:", n, source.Len(), source)
	if len(widths) > 0 {
		slices.Sort(widths)
		slices.Sort(heights)
		m := len(widths)
		fmt.Fprintf(w, " width min %d, median %d, max %d; height min %d, median %d, max %d",
			widths[0], widths[m/2], widths[m-1], heights[0], heights[m/2], heights[m-1])
	}
	if unreadable > 0 {
		fmt.Fprintf(w, "; %d files with undecodable headers", unreadable)
	}
	fmt.Fprintln(w)
	return nil
}

// printCounts prints the number of examples of each split, then the class index with the number
// of examples of each class in each split.
func printCounts(w io.Writer, classNames []string, splits []splitInfo) {
	counts := make([][]int, len(splits))
	for s, info := range splits {
		counts[s] = make([]int, len(classNames))
		for _, label := range info.labels {
			counts[s][label]++
		}
		if info.err != nil {
			fmt.Fprintf(w, "%s: %v\n", info.split, info.err)
		} else {
			fmt.Fprintf(w, "%s: %d examples\n", info.split, len(info.labels))
		}
	}
	fmt.Fprintf(w, "classes: %d\n", len(classNames))

	table := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(table, "label\tclass\t")
	for _, info := range splits {
		fmt.Fprintf(table, "%s\t", info.split)
	}
	fmt.Fprintln(table)
	for label, name := range classNames {
		fmt.Fprintf(table, "%d\t%s\t", label, name)
		for s := range splits {
			fmt.Fprintf(table, "%d\t", counts[s][label])
		}
		fmt.Fprintln(table)
	}
	table.Flush()
}

// writeGrid draws gridSize x gridSize examples of source, shuffled with the seed, through a
// Pipeline, writes them as a PNG grid and prints the class of each cell.
func writeGrid(c *config, w io.Writer, source datasets.Source, classNames []string) error {
	count := min(c.gridSize*c.gridSize, source.Len())
	p, err := datasets.NewPipeline(source, datasets.PipelineOptions{
		IteratorOptions: datasets.IteratorOptions{BatchSize: count, Shuffle: true, Seed: c.seed, Epochs: 1},
		Workers:         c.workers,
	})
	if err != nil {
		return err
	}
	defer p.Close()
	batch, ok := p.Next()
	if !ok {
		return fmt.Errorf("drawing the grid's images: %w", p.Err())
	}

	img := gridImage(batch, c.gridSize)
	f, err := os.Create(c.grid)
	if err != nil {
		return fmt.Errorf("writing grid: %w", err)
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("writing grid %s: %w", c.grid, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing grid %s: %w", c.grid, err)
	}

	fmt.Fprintf(w, "grid: %s, %d images of %dx%d in %d columns, %dx%d pixels; classes row by row:\n",
		c.grid, batch.Size, batch.Shape[1], batch.Shape[2], c.gridSize, img.Bounds().Dx(), img.Bounds().Dy())
	for row := 0; row*c.gridSize < batch.Size; row++ {
		var names []string
		for k := row * c.gridSize; k < min((row+1)*c.gridSize, batch.Size); k++ {
			names = append(names, classNames[batch.Labels[k]])
		}
		fmt.Fprintf(w, "  %s\n", strings.Join(names, ", "))
	}
	if folder, ok := source.(*datasets.FolderSource); ok && folder.Skipped() > 0 {
		fmt.Fprintf(w, "skipped %d undecodable files\n", folder.Skipped())
	}
	return nil
}

// gridGap is the number of grey pixels between and around the cells of the grid.
const gridGap = 2

// gridImage tiles the images of batch, whose values are in [0, 1], into columns columns. Images
// smaller than 64 pixels are enlarged by an integer factor, repeating pixels, so that they stay
// visible.
func gridImage(batch datasets.Batch, columns int) *image.RGBA {
	h, w, channels := batch.Shape[1], batch.Shape[2], batch.Shape[3]
	scale := max(1, 64/max(h, w))
	rows := (batch.Size + columns - 1) / columns
	cellW, cellH := w*scale+gridGap, h*scale+gridGap
	img := image.NewRGBA(image.Rect(0, 0, columns*cellW+gridGap, rows*cellH+gridGap))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = 128, 128, 128, 255
	}

	size := h * w * channels
	for k := range batch.Size {
		example := batch.Images[k*size : (k+1)*size]
		left, top := gridGap+(k%columns)*cellW, gridGap+(k/columns)*cellH
		for y := range h * scale {
			for x := range w * scale {
				pixel := example[((y/scale)*w+x/scale)*channels:]
				r := toByte(pixel[0])
				g, b := r, r
				if channels >= 3 {
					g, b = toByte(pixel[1]), toByte(pixel[2])
				}
				img.SetRGBA(left+x, top+y, color.RGBA{R: r, G: g, B: b, A: 255})
			}
		}
	}
	return img
}

// toByte maps a value in [0, 1] to a byte, clamping values outside.
func toByte(v float32) uint8 {
	return uint8(min(max(v, 0), 1)*255 + 0.5)
}
