package datasets

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// indexedDataset returns n examples of 2x2x1 images whose pixels all equal the example's index,
// so that a batch shows which examples it holds. Labels are the index modulo 10.
func indexedDataset(n int) *Dataset {
	d := &Dataset{
		Name:       "indexed",
		Height:     2,
		Width:      2,
		Channels:   1,
		Labels:     make([]int32, n),
		ClassNames: MNISTClasses,
	}
	for i := range n {
		d.Images = append(d.Images, float32(i), float32(i), float32(i), float32(i))
		d.Labels[i] = int32(i % 10)
	}
	return d
}

// exampleIDs returns the indices of the examples in a batch of an indexedDataset.
func exampleIDs(b Batch) []int {
	size := b.Shape[1] * b.Shape[2] * b.Shape[3]
	ids := make([]int, b.Size)
	for i := range ids {
		ids[i] = int(b.Images[i*size])
	}
	return ids
}

// collect starts an iterator and returns all the batches it yields.
func collect(t *testing.T, d *Dataset, options IteratorOptions) []Batch {
	t.Helper()
	it, err := NewIterator(d, options)
	require.NoError(t, err)
	defer it.Close()
	batches := []Batch{}
	for {
		batch, ok := it.Next()
		if !ok {
			return batches
		}
		batches = append(batches, batch)
	}
}

func TestIteratorEveryExampleOncePerEpoch(t *testing.T) {
	tests := []struct {
		name      string
		dropLast  bool
		wantSizes []int
	}{
		{"keep last", false, []int{3, 3, 3, 1}},
		{"drop last", true, []int{3, 3, 3}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			d := indexedDataset(10)
			batches := collect(t, d, IteratorOptions{BatchSize: 3, Shuffle: true, Seed: 42, DropLast: test.dropLast, Epochs: 2})
			perEpoch := len(test.wantSizes)
			require.Len(t, batches, 2*perEpoch)

			for epoch := range 2 {
				seen := map[int]int{}
				for index, batch := range batches[epoch*perEpoch : (epoch+1)*perEpoch] {
					want := Position{Epoch: epoch, Index: index, Step: int64(epoch*perEpoch + index)}
					assert.Equal(t, want, batch.Position)
					assert.Equal(t, test.wantSizes[index], batch.Size, "size of batch %d", want.Step)
					assert.Equal(t, [4]int{test.wantSizes[index], 2, 2, 1}, batch.Shape, "shape of batch %d", want.Step)
					assert.Len(t, batch.Images, batch.Size*4)
					require.Len(t, batch.Labels, batch.Size)
					for i, id := range exampleIDs(batch) {
						seen[id]++
						assert.Equal(t, int32(id%10), batch.Labels[i], "label of example %d", id)
					}
				}
				wantSeen := 0
				for _, size := range test.wantSizes {
					wantSeen += size
				}
				assert.Len(t, seen, wantSeen, "distinct examples in epoch %d", epoch)
				for id, count := range seen {
					assert.Equal(t, 1, count, "times example %d appears in epoch %d", id, epoch)
				}
			}
		})
	}
}

// epochIDs returns the example indices of each epoch, in the order the iterator visits them.
func epochIDs(t *testing.T, n int, options IteratorOptions) [][]int {
	t.Helper()
	batches := collect(t, indexedDataset(n), options)
	epochs := make([][]int, options.Epochs)
	for _, batch := range batches {
		epochs[batch.Epoch] = append(epochs[batch.Epoch], exampleIDs(batch)...)
	}
	return epochs
}

func TestIteratorShuffleDeterminism(t *testing.T) {
	options := IteratorOptions{BatchSize: 8, Shuffle: true, Seed: 7, Epochs: 3}
	first := epochIDs(t, 100, options)
	second := epochIDs(t, 100, options)
	assert.Equal(t, first, second, "the same seed must give the same order")

	options.Seed = 8
	other := epochIDs(t, 100, options)
	for epoch := range first {
		assert.NotEqual(t, first[epoch], other[epoch], "seeds 7 and 8 give the same order in epoch %d", epoch)
	}
	assert.NotEqual(t, first[0], first[1], "epochs 0 and 1 have the same order")
	assert.NotEqual(t, first[1], first[2], "epochs 1 and 2 have the same order")

	identity := make([]int, 100)
	for i := range identity {
		identity[i] = i
	}
	assert.NotEqual(t, identity, first[0], "a shuffled epoch is in dataset order")
}

func TestIteratorWithoutShuffleKeepsOrder(t *testing.T) {
	epochs := epochIDs(t, 5, IteratorOptions{BatchSize: 2, Seed: 3, Epochs: 2})
	assert.Equal(t, [][]int{{0, 1, 2, 3, 4}, {0, 1, 2, 3, 4}}, epochs)
}

func TestEpochOrderGolden(t *testing.T) {
	// Pins the shuffle, because a change of algorithm would break the resumption of runs
	// checkpointed before it. The expected orders come from testdata/epoch_order.py, a separate
	// implementation of the same steps in Python.
	assert.Equal(t, []int{7, 6, 1, 3, 2, 4, 8, 9, 0, 5}, epochOrder(10, true, 1, 0), "seed 1, epoch 0")
	assert.Equal(t, []int{4, 7, 1, 3, 6, 9, 5, 2, 8, 0}, epochOrder(10, true, 1, 1), "seed 1, epoch 1")
}

func TestUniformBelow(t *testing.T) {
	source := rand.NewPCG(1, 2)
	counts := make([]int, 3)
	const draws = 30000
	for range draws {
		counts[uniformBelow(source, 3)]++
	}
	// Each count is binomial with mean 10000 and standard deviation 82, so 410 is 5 deviations.
	for value, count := range counts {
		assert.InDelta(t, draws/3, count, 410, "draws of %d", value)
	}
	for _, n := range []uint64{1, 2, 7, 1 << 40, 1<<64 - 1} {
		for range 100 {
			got := uniformBelow(source, n)
			require.Less(t, got, n, "draw below %d", n)
		}
	}
}

func TestIteratorResume(t *testing.T) {
	d := indexedDataset(10)
	options := IteratorOptions{BatchSize: 3, Shuffle: true, Seed: 11, Epochs: 3}
	all := collect(t, d, options)
	require.Len(t, all, 12)

	// Steps 4 and 8 start an epoch, 5 is inside one, 11 is the last batch and 12 is past it.
	for _, start := range []int64{0, 4, 5, 8, 11, 12} {
		options.StartStep = start
		resumed := collect(t, d, options)
		assert.Equal(t, all[start:], resumed, "batches from step %d", start)
	}
}

func TestIteratorResumeFromPosition(t *testing.T) {
	d := indexedDataset(10)
	options := IteratorOptions{BatchSize: 4, Shuffle: true, Seed: 5, DropLast: true}
	it, err := NewIterator(d, options)
	require.NoError(t, err)
	defer it.Close()
	assert.Equal(t, Position{Epoch: 0, Index: 0, Step: 0}, it.Position())

	// Stop after 5 batches, in the middle of epoch 2.
	for range 5 {
		_, ok := it.Next()
		require.True(t, ok)
	}
	stopped := it.Position()
	assert.Equal(t, Position{Epoch: 2, Index: 1, Step: 5}, stopped)

	options.StartStep = stopped.Step
	resumed, err := NewIterator(d, options)
	require.NoError(t, err)
	defer resumed.Close()
	for range 6 {
		want, ok := it.Next()
		require.True(t, ok)
		got, ok := resumed.Next()
		require.True(t, ok)
		assert.Equal(t, want, got, "batch at step %d", want.Step)
	}
}

func TestIteratorPositionAt(t *testing.T) {
	it, err := NewIterator(indexedDataset(10), IteratorOptions{BatchSize: 3, Epochs: 1})
	require.NoError(t, err)
	defer it.Close()
	assert.Equal(t, 4, it.BatchesPerEpoch())
	assert.Equal(t, 4, BatchesPerEpoch(10, 3, false), "10 examples, batch 3, keep last")
	assert.Equal(t, 3, BatchesPerEpoch(10, 3, true), "10 examples, batch 3, drop last")
	assert.Equal(t, 5, BatchesPerEpoch(10, 2, false), "10 examples, batch 2, keep last")
	assert.Equal(t, 5, BatchesPerEpoch(10, 2, true), "10 examples, batch 2, drop last")
	assert.Equal(t, 0, BatchesPerEpoch(3, 5, true), "3 examples, batch 5, drop last")
	assert.Equal(t, Position{Epoch: 0, Index: 3, Step: 3}, it.PositionAt(3))
	assert.Equal(t, Position{Epoch: 2, Index: 1, Step: 9}, it.PositionAt(9))
}

func TestIteratorEndsAfterEpochs(t *testing.T) {
	it, err := NewIterator(indexedDataset(4), IteratorOptions{BatchSize: 2, Epochs: 1})
	require.NoError(t, err)
	for range 2 {
		_, ok := it.Next()
		require.True(t, ok)
	}
	_, ok := it.Next()
	assert.False(t, ok, "Next after the last epoch")
	select {
	case <-it.finished:
	case <-time.After(5 * time.Second):
		t.Fatal("the producer goroutine did not return after the last epoch")
	}
	it.Close()
}

func TestIteratorCloseStopsGoroutine(t *testing.T) {
	before := runtime.NumGoroutine()
	d := indexedDataset(10)

	// An iterator never read (its producer blocks on a full channel), one read a few times and one
	// closed twice.
	var iterators []*Iterator
	for range 3 {
		it, err := NewIterator(d, IteratorOptions{BatchSize: 2, Shuffle: true, Prefetch: 1})
		require.NoError(t, err)
		iterators = append(iterators, it)
	}
	for range 3 {
		_, ok := iterators[1].Next()
		require.True(t, ok)
	}
	for _, it := range iterators {
		it.Close()
	}
	iterators[2].Close()

	for _, it := range iterators {
		_, ok := it.Next()
		assert.False(t, ok, "Next after Close")
	}

	// A goroutine that closed its channels may not have exited yet, so poll for a while.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	assert.LessOrEqual(t, runtime.NumGoroutine(), before, "goroutines after Close")
}

func TestIteratorCloseUnblocksNext(t *testing.T) {
	it, err := NewIterator(indexedDataset(10), IteratorOptions{BatchSize: 2})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, ok := it.Next(); !ok {
				return
			}
		}
	}()
	time.Sleep(10 * time.Millisecond)
	it.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Next kept returning batches after Close")
	}
}

func TestNewIteratorErrors(t *testing.T) {
	d := indexedDataset(10)
	tests := []struct {
		name    string
		dataset *Dataset
		options IteratorOptions
		want    string
	}{
		{"zero batch size", d, IteratorOptions{}, "invalid batch size 0"},
		{"negative epochs", d, IteratorOptions{BatchSize: 2, Epochs: -1}, "invalid number of epochs -1"},
		{"negative start", d, IteratorOptions{BatchSize: 2, StartStep: -3}, "invalid start step -3"},
		{"negative prefetch", d, IteratorOptions{BatchSize: 2, Prefetch: -1}, "invalid prefetch depth -1"},
		{"batch larger than dataset", d, IteratorOptions{BatchSize: 11, DropLast: true}, "fewer than one batch of 11"},
		{"start past the end", d, IteratorOptions{BatchSize: 5, Epochs: 2, StartStep: 5}, "start step 5 is past the end of 2 epochs of 2 batches"},
		{"images and labels disagree", &Dataset{Name: "bad", Images: make([]float32, 7), Height: 2, Width: 2, Channels: 1, Labels: make([]int32, 2)},
			IteratorOptions{BatchSize: 1}, "7 image values for 2 labels"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			_, err := NewIterator(test.dataset, test.options)
			require.Error(t, err)
			assert.Contains(t, err.Error(), test.want)
		})
	}
}

func TestIteratorBatchLargerThanDataset(t *testing.T) {
	batches := collect(t, indexedDataset(3), IteratorOptions{BatchSize: 5, Epochs: 1})
	require.Len(t, batches, 1)
	assert.Equal(t, 3, batches[0].Size)
	assert.True(t, slices.Equal([]int{0, 1, 2}, exampleIDs(batches[0])))
}

var (
	benchmarkDatasetOnce sync.Once
	benchmarkDataset     *Dataset
	benchmarkSource      string
)

// loadBenchmarkDataset returns the Fashion-MNIST training split, or random pixels of the same
// shape when it is not installed: copying a batch costs the same for any pixel values.
func loadBenchmarkDataset() (*Dataset, string) {
	benchmarkDatasetOnce.Do(func() {
		d, err := LoadFashionMNIST("", Train)
		if err == nil {
			benchmarkDataset, benchmarkSource = d, "Fashion-MNIST training split"
			return
		}
		source := rand.New(rand.NewPCG(1, 1))
		d = &Dataset{Name: "random", Images: make([]float32, 60000*28*28), Height: 28, Width: 28, Channels: 1,
			Labels: make([]int32, 60000), ClassNames: FashionMNISTClasses}
		for i := range d.Images {
			d.Images[i] = source.Float32()
		}
		benchmarkDataset, benchmarkSource = d, "random 60000x28x28x1 images ("+err.Error()+")"
	})
	return benchmarkDataset, benchmarkSource
}

// BenchmarkBatch128 measures the time to get a shuffled batch of 128 Fashion-MNIST examples:
// "next" through Iterator.Next, with the background goroutine and the channel, and "copy" for
// the copy into a new batch alone.
func BenchmarkBatch128(b *testing.B) {
	d, source := loadBenchmarkDataset()
	b.Logf("dataset: %s", source)

	b.Run("next", func(b *testing.B) {
		it, err := NewIterator(d, IteratorOptions{BatchSize: 128, Shuffle: true, Seed: 1, DropLast: true})
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

	b.Run("copy", func(b *testing.B) {
		order := epochOrder(d.Len(), true, 1, 0)
		batchesPerEpoch := d.Len() / 128
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			start := (i % batchesPerEpoch) * 128
			makeBatch(d, order[start:start+128])
		}
	})
}
