package dotgrad

// RecommendedGoBackendConfig is the pure-Go backend configuration to use with the gradients of this
// package, for backends.NewWithConfig or the GOMLX_BACKEND environment variable. It runs the ops of
// a program one at a time, with DotGeneral and Erf still split over all cores. By the reasoning
// below it cannot deadlock, while the default configuration does.
//
// Why the default deadlocks (GoMLX v0.26.0, backends/simplego): the workers pool admits
// 2 x parallelism running tasks, and parallelism defaults to runtime.NumCPU(). When one program
// runs at a time, each op runs as a pool task. A DotGeneral op (dotgeneral_large.go and
// dotgeneral_small.go), and an Erf op on more than 4096 values, start their sub-tasks with
// workersPool.WaitToStart, which blocks until a slot is free, and then wait for those sub-tasks.
// If every slot holds such an op, each one waits for a slot that only another waiting op could
// free. The backward pass built by this package has several independent DotGeneral ops (the
// gradients of the lhs and rhs of each contraction, and of the query, key and value projections),
// so on a 2-core machine 4 of them fill the pool. A goroutine dump of the hang shows exactly that:
// four DotGeneral ops, each blocked in WaitToStart. The stock VJP uses Mul and ReduceSum there,
// which start no sub-tasks.
//
// The safe settings, by reading the code:
//   - "go:ops_sequential": ops run one at a time on the goroutine that called Execute, which holds
//     no slot. Only that goroutine waits in WaitToStart, and sub-tasks never do, so a slot always
//     frees up. DotGeneral and Erf still split their work over the pool.
//   - "go:parallelism=-1": WaitToStart and StartIfAvailable start a goroutine at once and never
//     block, so ops also run concurrently with each other.
//   - "go:parallelism=0": everything runs inline on one core.
//
// A larger finite parallelism only makes the deadlock rarer, because it then needs
// 2 x parallelism blocked ops at once.
//
// Measured with BenchmarkViTGrad (4 blocks, batch 128, 50 tokens, hidden 64, 4 heads, MLP 256) and
// the gradients of this package, on a 2-core Intel Xeon shared with other jobs (load average 3 to
// 9). Each run is its own process with -test.benchtime 3x, and peak RSS comes from /usr/bin/time.
// Three interleaved rounds of four configurations gave:
//
//	configuration       s/step, rounds 1-3    peak RSS
//	go                  hung in 6 of 6 tries, each given 40 to 150 s
//	go:ops_sequential   8.0, 10.2, 8.7        432-440 MB
//	go:parallelism=-1   9.2, 10.7, 7.6        532-619 MB
//	go:parallelism=4    9.0, 8.1, 9.1         429-652 MB
//	go:parallelism=0    9.1, 6.0, 10.6        547-621 MB
//
// Those rounds and nine more alternating pairs gave, in s/step:
//
//	go:ops_sequential   8.0 10.2 8.7 5.2 8.8 7.3 5.5 5.3 4.2 6.6 9.4 4.2    median 7.0
//	go:parallelism=-1   9.2 10.7 7.6 8.5 10.8 8.2 7.5 5.5 6.9 9.1 4.5 4.0   median 7.9
//
// Sequential ops were faster in 9 of the 12 pairs, and their peak RSS stayed at 408-440 MB against
// 532-653 MB. Running this package's tests under go test -race reports data races inside
// simplego's concurrent executor (exec.go, executeParallel) for "go", "go:parallelism=-1" and
// "go:parallelism=4", and none for "go:ops_sequential" or "go:parallelism=0".
//
// A CPU profile at parallelism 0 puts 84% of the time in DotGeneral, so overlapping the other ops
// has little to gain.
//
// NOTE: these timings come from a loaded 2-core machine. With many cores, running independent ops
// concurrently ("go:parallelism=-1", also deadlock-free) may pay off, which was not measured.
//
// To reproduce the deadlock, run BenchmarkViTGrad with -vit_configs go under timeout -s QUIT,
// which prints the goroutine stacks, because go test -timeout does not cover benchmarks.
const RecommendedGoBackendConfig = "go:ops_sequential"
