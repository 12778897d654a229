package train

import (
	"testing"

	"github.com/gomlx/gomlx/backends"
	"github.com/looksam/vitsam/datasets"
	"github.com/looksam/vitsam/graphx/dotgrad"
	"github.com/looksam/vitsam/models/vit"
	"github.com/looksam/vitsam/optimizers/looksam"
	"github.com/looksam/vitsam/pjrt"
)

// benchmarkStep times one step kind of the default CPU model (mnist-p7) at batch 128 on the
// pure-Go backend. Compilation and the first run of each program are left out of the timing.
func benchmarkStep(b *testing.B, rule looksam.Rule, kind looksam.StepKind) {
	dotgrad.Install()
	d := syntheticDataset(1024, 9)
	cfg := Config{
		Model:     vit.Presets[vit.DefaultPreset],
		Optimizer: looksam.Config{Rule: rule, Rho: 0.1, Alpha: 0.1, K: kForBench(rule)},
		Schedule:  Schedule{Peak: 1e-3, Total: 1 << 30, Decay: "constant"},
		Seed:      1, BatchSize: 128,
	}
	tr, err := NewTrainer(benchBackend(b), cfg)
	if err != nil {
		b.Fatal(err)
	}
	it, err := datasets.NewIterator(d, datasets.IteratorOptions{BatchSize: 128, Shuffle: true, Seed: 1, DropLast: true})
	if err != nil {
		b.Fatal(err)
	}
	defer it.Close()
	step := func() looksam.StepKind {
		batch, _ := it.Next()
		r, err := tr.TrainStep(batch)
		if err != nil {
			b.Fatal(err)
		}
		return r.Kind
	}
	// Warm-up: compile every program of the rule.
	for range len(tr.Optimizer().Kinds()) * 2 {
		step()
	}
	b.ResetTimer()
	measured := 0
	for measured < b.N {
		if tr.Kind(tr.Step()) != kind {
			b.StopTimer()
			step()
			b.StartTimer()
			continue
		}
		step()
		measured++
	}
}

func kForBench(rule looksam.Rule) int {
	if rule == looksam.RuleLookSAM || rule == looksam.RuleSAMK {
		return 2
	}
	return 0
}

// benchBackend returns the pure-Go backend with the project's configuration, which the dotgrad
// gradients need (see pjrt.GoBackendConfig).
func benchBackend(b *testing.B) backends.Backend {
	b.Helper()
	backend, err := backends.NewWithConfig(pjrt.GoBackendConfig)
	if err != nil {
		b.Fatal(err)
	}
	return backend
}

func BenchmarkStepPlainAdamW(b *testing.B) { benchmarkStep(b, looksam.RuleNone, looksam.KindPlain) }
func BenchmarkStepSAM(b *testing.B)        { benchmarkStep(b, looksam.RuleLookSAM, looksam.KindSAM) }
func BenchmarkStepReuse(b *testing.B)      { benchmarkStep(b, looksam.RuleLookSAM, looksam.KindReuse) }
