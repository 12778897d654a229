package dotgrad

// RecommendedGoBackendConfig is the pure-Go backend configuration to use with the gradients of this
// package, for backends.NewWithConfig or the GOMLX_BACKEND environment variable. It lifts the limit
// on worker goroutines, so ops run concurrently with each other and DotGeneral and Erf split their
// work over all cores. By the reasoning below it cannot deadlock, while the default configuration
// does.
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
// Measured on a quiet 2-core Intel Xeon (load average below 2), with the training step of the
// default CPU model (models/vit preset mnist-p7, AdamW, batch 128) in cmd/bench, one process per
// configuration:
//
//	go run ./cmd/bench -backend go:parallelism=-1 -configs adamw,sam,looksam:5 -rounds 2 -steps 5
//	go run ./cmd/bench -backend go:ops_sequential -configs adamw,looksam:5 -rounds 2 -steps 5
//
//	configuration       plain step, median (min-max)
//	go:parallelism=-1   0.704 s (0.657-0.813)
//	go:ops_sequential   1.235 s (1.042-1.319)
//
// Overlapping independent ops pays here because every op but DotGeneral and Erf runs on one core.
// Runs of BenchmarkViTGrad (4 blocks, batch 128, 50 tokens, hidden 64, 4 heads, MLP 256) on the
// same machine while other jobs kept its load average at 3 to 9 could not tell the two apart
// (median 7.0 s for ops_sequential and 7.9 s for parallelism=-1 over 12 runs each), and showed
// ops_sequential with a lower peak RSS: 408-440 MB against 532-653 MB. "go:ops_sequential" is the
// choice when memory matters more than time.
//
// NOTE: go test -race reports data races inside simplego's concurrent executor (exec.go,
// executeParallel) for every configuration that runs ops concurrently, GoMLX's default included,
// and none for "go:ops_sequential" or "go:parallelism=0". The race found is a read of a buffer's
// use count without the lock; a stale read only makes the op copy its input instead of reusing it
// in place, which wastes memory but does not change results.
//
// To reproduce the deadlock, run BenchmarkViTGrad with -vit_configs go under timeout -s QUIT,
// which prints the goroutine stacks, because go test -timeout does not cover benchmarks.
const RecommendedGoBackendConfig = "go:parallelism=-1"
