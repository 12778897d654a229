package datasets

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// collectPipeline starts a pipeline and returns all the batches it yields.
func collectPipeline(t testing.TB, source Source, options PipelineOptions) []Batch {
	t.Helper()
	p, err := NewPipeline(source, options)
	require.NoError(t, err)
	defer p.Close()
	batches := []Batch{}
	for {
		batch, ok := p.Next()
		if !ok {
			require.NoError(t, p.Err())
			return batches
		}
		batches = append(batches, batch)
	}
}

func TestPipelineMatchesIterator(t *testing.T) {
	d := indexedDataset(23)
	for _, options := range []IteratorOptions{
		{BatchSize: 5, Shuffle: true, Seed: 3, Epochs: 3},
		{BatchSize: 5, Shuffle: true, Seed: 3, Epochs: 2, DropLast: true, StartStep: 3},
		{BatchSize: 4, Epochs: 1},
	} {
		want := collect(t, d, options)
		got := collectPipeline(t, d, PipelineOptions{IteratorOptions: options, Workers: 3})
		assert.Equal(t, want, got, "options %+v", options)
	}
}

// randomDataset returns n images of h x w x c values drawn from a PCG, with labels i mod 10.
func randomDataset(n, h, w, c int) *Dataset {
	source := rand.New(rand.NewPCG(9, 9))
	d := &Dataset{Name: "random", Height: h, Width: w, Channels: c, Labels: make([]int32, n),
		Images: make([]float32, n*h*w*c), ClassNames: CIFAR10Classes}
	for i := range d.Images {
		d.Images[i] = source.Float32()
	}
	for i := range d.Labels {
		d.Labels[i] = int32(i % 10)
	}
	return d
}

// padCropFlipReference returns the image that PadCropFlip gives for offsets (dy, dx) and flip,
// computed on an explicitly padded copy of the image.
func padCropFlipReference(image []float32, h, w, c, pad, dy, dx int, flip bool) []float32 {
	ph, pw := h+2*pad, w+2*pad
	padded := make([]float32, ph*pw*c)
	for y := range h {
		for x := range w {
			copy(padded[((y+pad)*pw+x+pad)*c:], image[(y*w+x)*c:(y*w+x+1)*c])
		}
	}
	out := make([]float32, h*w*c)
	for y := range h {
		for x := range w {
			// The crop's pixel (y, x) is padded pixel (y+pad+dy, x+pad+dx); a flip reads column w-1-x.
			cx := x
			if flip {
				cx = w - 1 - x
			}
			copy(out[(y*w+x)*c:(y*w+x+1)*c], padded[((y+pad+dy)*pw+cx+pad+dx)*c:])
		}
	}
	return out
}

func TestExampleRandGolden(t *testing.T) {
	// Pins the per-example random draws, because a change would alter the augmentation of runs
	// resumed from a checkpoint taken before it. The expected values come from
	// testdata/example_rand.py, a separate implementation of the same steps in Python.
	var rng rand.PCG
	seedExampleRand(&rng, 1, 0, 0)
	assert.Equal(t, uint64(0x3fc361cd11ecf59f), rng.Uint64(), "seed 1, epoch 0, index 0, draw 0")
	assert.Equal(t, uint64(0x1fcca28e67ec1b82), rng.Uint64(), "seed 1, epoch 0, index 0, draw 1")
	seedExampleRand(&rng, 7, 3, 12345)
	assert.Equal(t, uint64(0xdfc283f4ccbe48a), rng.Uint64(), "seed 7, epoch 3, index 12345")

	wantCrops := []image.Rectangle{
		image.Rect(124, 32, 377, 363),
		image.Rect(9, 1, 500, 374),
		image.Rect(168, 31, 343, 183),
	}
	for index, want := range wantCrops {
		seedExampleRand(&rng, 2, 1, index)
		got := randomResizedCrop(500, 375, &rng, DefaultCropScale, DefaultCropAspectRatio)
		assert.Equal(t, want, got, "crop of 500x375, seed 2, epoch 1, index %d", index)
	}
}

func TestPadCropFlipOutcomes(t *testing.T) {
	d := randomDataset(1, 2, 3, 2)
	augment := &PadCropFlip{Dataset: d, Pad: 1, Flip: true}
	var outcomes []string
	want := map[string][]float32{}
	for dy := -1; dy <= 1; dy++ {
		for dx := -1; dx <= 1; dx++ {
			for _, flip := range []bool{false, true} {
				key := fmt.Sprintf("dy=%d dx=%d flip=%v", dy, dx, flip)
				outcomes = append(outcomes, key)
				want[key] = padCropFlipReference(d.Image(0), 2, 3, 2, 1, dy, dx, flip)
			}
		}
	}

	seen := map[string]int{}
	for seed := range uint64(400) {
		got := make([]float32, 12)
		label, err := augment.Example(0, rand.NewPCG(seed, 5), got)
		require.NoError(t, err)
		assert.Equal(t, int32(0), label)
		matched := ""
		for key, image := range want {
			if assert.ObjectsAreEqual(image, got) {
				matched = key
			}
		}
		require.NotEmpty(t, matched, "seed %d gives %v, none of the 18 padded crops", seed, got)
		seen[matched]++
	}
	// 400 draws over 18 equally likely outcomes: each is expected 22 times and missing with
	// probability below 18 * (17/18)^400, about 2e-9.
	for _, key := range outcomes {
		assert.Positive(t, seen[key], "outcome %s never drawn", key)
	}
}

func TestPadCropFlipWithoutPadding(t *testing.T) {
	d := randomDataset(2, 3, 3, 1)
	got := make([]float32, 9)
	_, err := (&PadCropFlip{Dataset: d}).Example(1, rand.NewPCG(1, 2), got)
	require.NoError(t, err)
	assert.Equal(t, d.Image(1), got, "no padding and no flip copies the image")

	_, err = (&PadCropFlip{Dataset: d, Pad: -1}).Example(1, rand.NewPCG(1, 2), got)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "invalid padding -1")
}

func TestPipelineSameBatchesForAnyWorkers(t *testing.T) {
	augmented := &PadCropFlip{Dataset: randomDataset(37, 6, 6, 3), Pad: 2, Flip: true}
	root := writeFolder(t, map[string]map[string]int{"train": {"c0": 5, "c1": 4, "c2": 6}})
	folder, err := OpenFolder(root, Train, FolderOptions{Size: 8, Transform: RandomResizedCrop, Flip: true})
	require.NoError(t, err)

	sources := []struct {
		name    string
		source  Source
		options IteratorOptions
	}{
		{"pad crop flip", augmented, IteratorOptions{BatchSize: 8, Shuffle: true, Seed: 21, Epochs: 3}},
		{"folder", folder, IteratorOptions{BatchSize: 4, Shuffle: true, Seed: 5, Epochs: 2, DropLast: true}},
	}
	for _, test := range sources {
		t.Run(test.name, func(t *testing.T) {
			oneWorker := collectPipeline(t, test.source, PipelineOptions{IteratorOptions: test.options, Workers: 1})
			shallow := test.options
			shallow.Prefetch = 1
			fourWorkers := collectPipeline(t, test.source, PipelineOptions{IteratorOptions: shallow, Workers: 4})
			require.NotEmpty(t, oneWorker)
			assert.Equal(t, oneWorker, fourWorkers, "batches with 1 and with 4 workers")

			// The augmentation draws differ between epochs and between seeds.
			perEpoch := len(oneWorker) / test.options.Epochs
			assert.NotEqual(t, oneWorker[0].Images, oneWorker[perEpoch].Images, "epochs 0 and 1 start alike")
			other := test.options
			other.Seed++
			reseeded := collectPipeline(t, test.source, PipelineOptions{IteratorOptions: other, Workers: 2})
			assert.NotEqual(t, oneWorker[0].Images, reseeded[0].Images, "seeds %d and %d give the same first batch",
				test.options.Seed, other.Seed)
		})
	}
}

func TestPipelineAugmentationIndependentOfOrder(t *testing.T) {
	// Example i of an epoch gets the same random draws whatever batch it falls in, so a shuffled
	// and an unshuffled pipeline produce the same images for each example.
	d := randomDataset(12, 4, 4, 1)
	// Tag each image with its index in pixels (0, 0) and (0, 3), which a flip swaps and a crop
	// with Pad 0 keeps.
	for i := range d.Len() {
		d.Image(i)[0], d.Image(i)[3] = float32(i), float32(i)
	}
	augment := &PadCropFlip{Dataset: d, Flip: true}
	byExample := func(batches []Batch) map[int][]float32 {
		images := map[int][]float32{}
		for _, b := range batches {
			for k := range b.Size {
				image := b.Images[k*16 : (k+1)*16]
				images[int(image[0])] = image
			}
		}
		return images
	}
	shuffled := collectPipeline(t, augment, PipelineOptions{IteratorOptions: IteratorOptions{BatchSize: 5, Shuffle: true, Seed: 4, Epochs: 1}})
	ordered := collectPipeline(t, augment, PipelineOptions{IteratorOptions: IteratorOptions{BatchSize: 3, Seed: 4, Epochs: 1}})
	assert.Equal(t, byExample(ordered), byExample(shuffled))
}

func TestPipelineResume(t *testing.T) {
	source := &PadCropFlip{Dataset: randomDataset(10, 4, 4, 3), Pad: 1, Flip: true}
	options := PipelineOptions{IteratorOptions: IteratorOptions{BatchSize: 3, Shuffle: true, Seed: 11, Epochs: 3}, Workers: 2}
	all := collectPipeline(t, source, options)
	require.Len(t, all, 12)
	for _, start := range []int64{0, 4, 5, 11, 12} {
		options.StartStep = start
		resumed := collectPipeline(t, source, options)
		assert.Equal(t, all[start:], resumed, "batches from step %d", start)
	}

	// Stop after 5 batches of an endless pipeline and resume from its Position.
	options = PipelineOptions{IteratorOptions: IteratorOptions{BatchSize: 4, Shuffle: true, Seed: 5, DropLast: true}, Workers: 3}
	p, err := NewPipeline(source, options)
	require.NoError(t, err)
	defer p.Close()
	assert.Equal(t, 2, p.BatchesPerEpoch())
	for range 5 {
		_, ok := p.Next()
		require.True(t, ok)
	}
	stopped := p.Position()
	assert.Equal(t, Position{Epoch: 2, Index: 1, Step: 5}, stopped)
	options.StartStep = stopped.Step
	resumed, err := NewPipeline(source, options)
	require.NoError(t, err)
	defer resumed.Close()
	for range 6 {
		want, ok := p.Next()
		require.True(t, ok)
		got, ok := resumed.Next()
		require.True(t, ok)
		assert.Equal(t, want, got, "batch at step %d", want.Step)
	}
}

// failingSource is a Dataset source whose example failAt returns an error.
type failingSource struct {
	*Dataset
	failAt int
}

func (s failingSource) Example(i int, rng *rand.PCG, image []float32) (int32, error) {
	if i == s.failAt {
		return 0, errors.New("broken example")
	}
	return s.Dataset.Example(i, rng, image)
}

func TestPipelineStopsOnError(t *testing.T) {
	source := failingSource{Dataset: indexedDataset(20), failAt: 13}
	p, err := NewPipeline(source, PipelineOptions{IteratorOptions: IteratorOptions{BatchSize: 4, Epochs: 1}, Workers: 3})
	require.NoError(t, err)
	defer p.Close()
	var batches int
	for {
		_, ok := p.Next()
		if !ok {
			break
		}
		batches++
	}
	assert.Equal(t, 3, batches, "batches before the one holding example 13")
	require.Error(t, p.Err())
	assert.Contains(t, p.Err().Error(), "batch at step 3")
	assert.Contains(t, p.Err().Error(), "example 13: broken example")
	_, ok := p.Next()
	assert.False(t, ok, "Next after an error")
}

func TestPipelineFolderDecodeErrors(t *testing.T) {
	root := writeFolder(t, map[string]map[string]int{"train": {"c0": 3, "c1": 3}})
	bad := writeFileTB(t, filepath.Join(root, "train", "c1"), "img1.png", []byte("garbage bytes"))
	options := PipelineOptions{IteratorOptions: IteratorOptions{BatchSize: 3, Shuffle: true, Seed: 2, Epochs: 2}, Workers: 2}

	t.Run("stop", func(t *testing.T) {
		source, err := OpenFolder(root, Train, FolderOptions{Size: 4})
		require.NoError(t, err)
		p, err := NewPipeline(source, options)
		require.NoError(t, err)
		defer p.Close()
		for {
			if _, ok := p.Next(); !ok {
				break
			}
		}
		require.Error(t, p.Err())
		assert.Contains(t, p.Err().Error(), bad)
		var decodeErr *DecodeError
		assert.True(t, errors.As(p.Err(), &decodeErr), "error %v wraps a *DecodeError", p.Err())
	})

	t.Run("skip", func(t *testing.T) {
		var logs bytes.Buffer
		source, err := OpenFolder(root, Train, FolderOptions{Size: 4, OnDecodeError: SkipUndecodable,
			Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		require.NoError(t, err)
		batches := collectPipeline(t, source, options)
		require.Len(t, batches, 4)
		for _, b := range batches {
			assert.Equal(t, 3, b.Size, "batch %d keeps its size", b.Step)
		}
		assert.Equal(t, 1, source.Skipped())
		assert.Contains(t, logs.String(), bad)

		// Skipping is deterministic: a second pipeline over a fresh source gives the same batches.
		again, err := OpenFolder(root, Train, FolderOptions{Size: 4, OnDecodeError: SkipUndecodable,
			Logger: slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))})
		require.NoError(t, err)
		options.Workers = 4
		assert.Equal(t, batches, collectPipeline(t, again, options))
	})
}

func TestPipelineCloseStopsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	source := &PadCropFlip{Dataset: randomDataset(50, 4, 4, 1), Pad: 1}

	// A pipeline never read, one read a few times, one closed twice, and one that failed.
	var pipelines []*Pipeline
	for range 3 {
		p, err := NewPipeline(source, PipelineOptions{IteratorOptions: IteratorOptions{BatchSize: 2, Shuffle: true, Prefetch: 1}, Workers: 4})
		require.NoError(t, err)
		pipelines = append(pipelines, p)
	}
	for range 3 {
		_, ok := pipelines[1].Next()
		require.True(t, ok)
	}
	failing, err := NewPipeline(failingSource{Dataset: indexedDataset(10), failAt: 0}, PipelineOptions{IteratorOptions: IteratorOptions{BatchSize: 2}, Workers: 2})
	require.NoError(t, err)
	_, ok := failing.Next()
	require.False(t, ok)
	pipelines = append(pipelines, failing)

	for _, p := range pipelines {
		p.Close()
	}
	pipelines[2].Close()
	for _, p := range pipelines {
		_, ok := p.Next()
		assert.False(t, ok, "Next after Close")
	}

	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	assert.LessOrEqual(t, runtime.NumGoroutine(), before, "goroutines after Close")
}

func TestPipelineCloseUnblocksNext(t *testing.T) {
	// A source that blocks until released keeps a batch pending; Close must still end Next.
	release := make(chan struct{})
	source := blockingSource{Dataset: indexedDataset(10), release: release}
	p, err := NewPipeline(source, PipelineOptions{IteratorOptions: IteratorOptions{BatchSize: 2}, Workers: 2})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, ok := p.Next()
		assert.False(t, ok)
	}()
	time.Sleep(10 * time.Millisecond)
	var closed sync.WaitGroup
	closed.Add(1)
	go func() {
		defer closed.Done()
		p.Close()
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Next did not return after Close")
	}
	close(release)
	closed.Wait()
}

// blockingSource is a Dataset source whose examples wait until release is closed.
type blockingSource struct {
	*Dataset
	release chan struct{}
}

func (s blockingSource) Example(i int, rng *rand.PCG, image []float32) (int32, error) {
	<-s.release
	return s.Dataset.Example(i, rng, image)
}

func TestNewPipelineErrors(t *testing.T) {
	d := indexedDataset(10)
	tests := []struct {
		name    string
		source  Source
		options PipelineOptions
		want    string
	}{
		{"negative workers", d, PipelineOptions{IteratorOptions: IteratorOptions{BatchSize: 2}, Workers: -1}, "invalid number of workers -1"},
		{"zero batch size", d, PipelineOptions{}, "invalid batch size 0"},
		{"batch larger than source", d, PipelineOptions{IteratorOptions: IteratorOptions{BatchSize: 11, DropLast: true}},
			"indexed/train has 10 examples, fewer than one batch of 11"},
		{"empty shape", &Dataset{Name: "flat"}, PipelineOptions{IteratorOptions: IteratorOptions{BatchSize: 1}}, "image shape 0x0x0"},
		{"images and labels disagree", &PadCropFlip{Dataset: &Dataset{Name: "bad", Images: make([]float32, 7), Height: 2, Width: 2,
			Channels: 1, Labels: make([]int32, 2)}}, PipelineOptions{IteratorOptions: IteratorOptions{BatchSize: 1}}, "7 image values for 2 labels"},
		{"negative padding", &PadCropFlip{Dataset: d, Pad: -2}, PipelineOptions{IteratorOptions: IteratorOptions{BatchSize: 1}}, "invalid padding -2"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			_, err := NewPipeline(test.source, test.options)
			require.Error(t, err)
			assert.Contains(t, err.Error(), test.want)
		})
	}
}

// benchmarkFolder writes count JPEG images of 500x375 pixels, the typical size of an ImageNet
// photo, into a temporary folder and returns its root. The images are smooth gradients with
// noise, so that they compress about as much as photos.
func benchmarkFolder(b *testing.B, count int) string {
	b.Helper()
	root := b.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range count {
		img := image.NewRGBA(image.Rect(0, 0, 500, 375))
		for y := range 375 {
			for x := range 500 {
				noise := rng.IntN(32)
				img.SetRGBA(x, y, color.RGBA{R: uint8(x/2 + noise), G: uint8(y/2 + noise), B: uint8((x + y + 7*i) % 256), A: 255})
			}
		}
		writeJPEG(b, filepath.Join(root, "train", fmt.Sprintf("class%d", i%4)), fmt.Sprintf("%03d.jpg", i), img, 90)
	}
	return root
}

// BenchmarkFolderPipeline224 measures images per second through a Pipeline over 64 JPEGs of
// 500x375: decoding, Inception random resized crop to 224x224, flip and conversion to float32,
// with 1 and 2 workers. Run it with -cpu 2 to give the workers two cores. It also reports the CPU
// time of the whole process per image, which includes the consumer and the garbage collector.
func BenchmarkFolderPipeline224(b *testing.B) {
	root := benchmarkFolder(b, 64)
	source, err := OpenFolder(root, Train, FolderOptions{Size: 224, Transform: RandomResizedCrop, Flip: true})
	require.NoError(b, err)
	const batchSize = 16
	for _, workers := range []int{1, 2} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			p, err := NewPipeline(source, PipelineOptions{
				IteratorOptions: IteratorOptions{BatchSize: batchSize, Shuffle: true, Seed: 1, DropLast: true},
				Workers:         workers,
			})
			require.NoError(b, err)
			defer p.Close()
			// Fill the queue before timing.
			if _, ok := p.Next(); !ok {
				b.Fatal(p.Err())
			}
			b.ResetTimer()
			start, startCPU := time.Now(), processCPUTime()
			for range b.N {
				if _, ok := p.Next(); !ok {
					b.Fatal(p.Err())
				}
			}
			images := float64(b.N * batchSize)
			b.ReportMetric(images/time.Since(start).Seconds(), "images/s")
			// CPU time per image depends less than wall time on other processes sharing the cores.
			if cpu := processCPUTime() - startCPU; cpu > 0 {
				b.ReportMetric(cpu.Seconds()*1000/images, "cpu-ms/image")
			}
		})
	}
}

// BenchmarkCIFARBatch128 measures the time to get a shuffled batch of 128 CIFAR-sized examples
// (32x32x3) from 50000 random images: through Iterator.Next, and through a Pipeline with the
// pad-4 crop and flip augmentation on 1 and 2 workers.
func BenchmarkCIFARBatch128(b *testing.B) {
	d := randomDataset(50000, 32, 32, 3)
	options := IteratorOptions{BatchSize: 128, Shuffle: true, Seed: 1, DropLast: true}

	b.Run("iterator", func(b *testing.B) {
		it, err := NewIterator(d, options)
		require.NoError(b, err)
		defer it.Close()
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if _, ok := it.Next(); !ok {
				b.Fatal("the iterator ended")
			}
		}
	})

	for _, workers := range []int{1, 2} {
		b.Run(fmt.Sprintf("pad-crop-flip/workers=%d", workers), func(b *testing.B) {
			p, err := NewPipeline(&PadCropFlip{Dataset: d, Pad: 4, Flip: true},
				PipelineOptions{IteratorOptions: options, Workers: workers})
			require.NoError(b, err)
			defer p.Close()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, ok := p.Next(); !ok {
					b.Fatal(p.Err())
				}
			}
		})
	}
}
