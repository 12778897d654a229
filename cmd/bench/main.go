// Command bench measures the cost of sharpness-aware training side by side, like Table 1 of the
// LookSAM paper: for each configuration it times plain, SAM and reuse steps, derives the time per
// epoch, and reports the ratio to the base optimizer next to the ideal ratio (1 + 1/k for
// LookSAM-k and SAM-k, 2 for SAM).
//
// The configurations run in one process on the same data, interleaved in rounds so that machine
// noise hits all of them alike. Compilation and warm-up steps are timed apart and left out.
//
//	go run ./cmd/bench
//	go run ./cmd/bench -configs adamw,sam,sam-k:5,looksam:5,looksam:10 -rounds 5 -json out.json -csv out.csv -plot cost.png
//	go run ./cmd/bench -accuracy-runs runs/a/metrics.jsonl,runs/b/metrics.jsonl -accuracy-plot accuracy.png
package main

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gomlx/gomlx/backends"
	"github.com/looksam/vitsam/cmd/internal/curves"
	"github.com/looksam/vitsam/datasets"
	"github.com/looksam/vitsam/graphx/dotgrad"
	"github.com/looksam/vitsam/models/vit"
	"github.com/looksam/vitsam/optimizers/looksam"
	"github.com/looksam/vitsam/pjrt"
	"github.com/looksam/vitsam/train"
)

// benchConfig is one configuration to measure.
type benchConfig struct {
	Name string
	Rule looksam.Rule
	K    int
}

// parseConfigs parses "adamw,sam,sam-k:5,looksam:5": a rule name (adamw, sgd and lamb mean the
// base optimizer alone) with an optional ":k".
func parseConfigs(list string) ([]benchConfig, error) {
	var out []benchConfig
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, kText, hasK := strings.Cut(item, ":")
		c := benchConfig{Name: item, Rule: looksam.Rule(name)}
		switch name {
		case "adamw", "sgd", "lamb", "base":
			c.Rule = looksam.RuleNone
		}
		if hasK {
			k, err := strconv.Atoi(kText)
			if err != nil || k < 1 {
				return nil, fmt.Errorf("invalid k %q in configuration %q: use RULE:K with K >= 1", kText, item)
			}
			c.K = k
		}
		if _, err := looksam.New(looksam.Config{Rule: c.Rule, K: c.K, Rho: 0.1}); err != nil {
			return nil, fmt.Errorf("invalid configuration %q: %w", item, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no configuration given: use for example -configs adamw,sam,looksam:5")
	}
	return out, nil
}

// Stats summarises step times in seconds.
type Stats struct {
	Count  int     `json:"count"`
	Median float64 `json:"median_s"`
	Min    float64 `json:"min_s"`
	Max    float64 `json:"max_s"`
}

func summarise(times []float64) Stats {
	if len(times) == 0 {
		return Stats{}
	}
	s := slices.Clone(times)
	slices.Sort(s)
	median := s[len(s)/2]
	if len(s)%2 == 0 {
		median = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stats{Count: len(s), Median: median, Min: s[0], Max: s[len(s)-1]}
}

// Result is the measurement of one configuration.
type Result struct {
	Name          string             `json:"name"`
	Rule          looksam.Rule       `json:"rule"`
	Base          looksam.BaseName   `json:"base"`
	K             int                `json:"k"`
	Model         string             `json:"model"`
	Batch         int                `json:"batch"`
	Backend       string             `json:"backend"`
	CompileSecond map[string]float64 `json:"compile_and_first_step_s"`
	Steps         map[string]Stats   `json:"steps"`
	// StepSeconds is the mean time of one step over a whole k-cycle, from the median step times:
	// (t_sam + (k - 1) t_other) / k.
	StepSeconds     float64 `json:"mean_step_s"`
	ImagesPerSecond float64 `json:"images_per_s"`
	// EpochSeconds is computed from StepSeconds for EpochImages images, not measured over a whole epoch.
	EpochSeconds float64            `json:"epoch_s_computed"`
	EpochImages  int                `json:"epoch_images"`
	Ratio        float64            `json:"ratio_to_base"`
	IdealRatio   float64            `json:"ideal_ratio"`
	GradsPerStep float64            `json:"gradients_per_step"`
	StateBytes   int64              `json:"optimizer_state_bytes"`
	WeightBytes  int64              `json:"weight_bytes"`
	ExtraBuffers float64            `json:"state_in_parameter_sizes"`
	PeakHeapMiB  map[string]float64 `json:"peak_go_heap_mib,omitempty"`
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configList := fs.String("configs", "adamw,sam,sam-k:5,looksam:5", "comma-separated RULE[:K] list; adamw, sgd and lamb mean the base optimizer alone")
	base := fs.String("base", "adamw", "base optimizer: sgd, adamw or lamb")
	model := fs.String("model", vit.DefaultPreset, "model preset: "+strings.Join(vit.PresetNames(), ", "))
	batch := fs.Int("batch", 128, "batch size")
	backendName := fs.String("backend", "go", "backend, as cmd/train's -backend")
	rounds := fs.Int("rounds", 3, "rounds; each round runs -steps steps of every configuration")
	steps := fs.Int("steps", 10, "steps per configuration per round")
	epochImages := fs.Int("epoch-images", 60000, "images per epoch for the computed epoch time (60000: Fashion-MNIST)")
	jsonPath := fs.String("json", "", "write the results as JSON to this file")
	csvPath := fs.String("csv", "", "write the results as CSV to this file")
	plotPath := fs.String("plot", "", "write a PNG plot of the cost ratio against k to this file")
	accuracyRuns := fs.String("accuracy-runs", "", "comma-separated metrics.jsonl files of training runs (cmd/train): with -accuracy-plot, plots their test accuracy against time, like Figure 4 of the LookSAM paper")
	accuracyPlot := fs.String("accuracy-plot", "", "write the PNG plot of test accuracy against time of -accuracy-runs to this file")
	fromJSON := fs.String("from-json", "", "measure nothing: read the results of an earlier -json file, print them and write -csv and -plot")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*accuracyRuns == "") != (*accuracyPlot == "") {
		return errors.New("-accuracy-runs and -accuracy-plot go together: give both, or neither")
	}
	if *accuracyRuns != "" {
		if err := plotAccuracy(stdout, *accuracyPlot, strings.Split(*accuracyRuns, ",")); err != nil {
			return err
		}
		if *fromJSON == "" && !flagSet(fs, "configs") {
			return nil
		}
	}
	if *fromJSON != "" {
		data, err := os.ReadFile(*fromJSON)
		if err != nil {
			return fmt.Errorf("reading -from-json: %w", err)
		}
		var results []Result
		if err := json.Unmarshal(data, &results); err != nil {
			return fmt.Errorf("reading -from-json %s: %w", *fromJSON, err)
		}
		return report(stdout, results, "", *csvPath, *plotPath)
	}
	configs, err := parseConfigs(*configList)
	if err != nil {
		return err
	}
	modelCfg, err := vit.Preset(*model)
	if err != nil {
		return err
	}
	switch {
	case *batch < 1:
		return fmt.Errorf("invalid -batch %d: it must be at least 1", *batch)
	case *rounds < 1:
		return fmt.Errorf("invalid -rounds %d: it must be at least 1", *rounds)
	case *steps < 1:
		return fmt.Errorf("invalid -steps %d: it must be at least 1", *steps)
	case *epochImages < *batch:
		return fmt.Errorf("invalid -epoch-images %d: it must be at least the batch size %d", *epochImages, *batch)
	}

	dotgrad.Install()
	backend, choice, err := pjrt.Select(*backendName)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, choice)
	fmt.Fprintf(stdout, "bench: model %s, batch %d, base %s, %d rounds of %d steps per configuration, GOMAXPROCS %d\n",
		*model, *batch, *base, *rounds, *steps, runtime.GOMAXPROCS(0))

	data := randomDataset(modelCfg, 4**batch)
	runners := make([]*runner, len(configs))
	for i, c := range configs {
		r, err := newRunner(backend, c, looksam.BaseName(*base), modelCfg, *batch, data)
		if err != nil {
			return err
		}
		runners[i] = r
		defer r.close()
	}

	// Compilation and warm-up: the first run of each program, timed apart.
	for _, r := range runners {
		if err := r.warmUp(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "bench: %s compiled and warmed up: %s\n", r.cfg.Name, formatCompile(r.compile))
	}

	// Measured rounds, interleaved.
	for round := range *rounds {
		for _, r := range runners {
			if err := r.runSteps(*steps); err != nil {
				return err
			}
		}
		fmt.Fprintf(stdout, "bench: round %d/%d done\n", round+1, *rounds)
	}

	results := make([]Result, len(runners))
	for i, r := range runners {
		results[i] = r.result(*model, *batch, choice.Backend, *epochImages)
	}
	baseSeconds := 0.0
	for _, res := range results {
		if res.Rule == looksam.RuleNone {
			baseSeconds = res.StepSeconds
			break
		}
	}
	for i := range results {
		if baseSeconds > 0 {
			results[i].Ratio = results[i].StepSeconds / baseSeconds
		}
	}

	return report(stdout, results, *jsonPath, *csvPath, *plotPath)
}

// report prints the results and writes each output file whose path is not empty.
func report(stdout io.Writer, results []Result, jsonPath, csvPath, plotPath string) error {
	printTable(stdout, results)
	if jsonPath != "" {
		if err := writeJSON(jsonPath, results); err != nil {
			return err
		}
	}
	if csvPath != "" {
		if err := writeCSV(csvPath, results); err != nil {
			return err
		}
	}
	if plotPath != "" {
		if err := plotCost(plotPath, results); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "bench: plot written to %s\n", plotPath)
	}
	return nil
}

// randomDataset returns n random images of the model's input shape with random labels.
func randomDataset(cfg vit.Config, n int) *datasets.Dataset {
	rng := rand.New(rand.NewPCG(1, 2))
	size := cfg.ImageSize * cfg.ImageSize * cfg.Channels
	d := &datasets.Dataset{Name: "random", Height: cfg.ImageSize, Width: cfg.ImageSize, Channels: cfg.Channels,
		Images: make([]float32, n*size), Labels: make([]int32, n)}
	for i := range d.Images {
		d.Images[i] = rng.Float32()
	}
	for i := range d.Labels {
		d.Labels[i] = int32(rng.IntN(cfg.Classes))
	}
	d.ClassNames = make([]string, cfg.Classes)
	for i := range d.ClassNames {
		d.ClassNames[i] = strconv.Itoa(i)
	}
	return d
}

// runner trains one configuration and records its step times by kind.
type runner struct {
	cfg     benchConfig
	trainer *train.Trainer
	it      *datasets.Iterator
	times   map[looksam.StepKind][]float64
	compile map[looksam.StepKind]float64
	peak    map[looksam.StepKind]uint64
}

func newRunner(backend backends.Backend, c benchConfig, base looksam.BaseName, model vit.Config, batch int, data *datasets.Dataset) (*runner, error) {
	cfg := train.Config{
		Model:     model,
		Optimizer: looksam.Config{Rule: c.Rule, Base: base, K: c.K, Rho: 0.05, Alpha: 0.1, Momentum: 0.9},
		Schedule:  train.Schedule{Peak: 1e-4, Total: 1 << 40, Decay: "constant"},
		Seed:      1, BatchSize: batch,
	}
	t, err := train.NewTrainer(backend, cfg)
	if err != nil {
		return nil, fmt.Errorf("configuration %s: %w", c.Name, err)
	}
	it, err := datasets.NewIterator(data, datasets.IteratorOptions{BatchSize: batch, Shuffle: true, Seed: 1, DropLast: true})
	if err != nil {
		return nil, err
	}
	return &runner{cfg: c, trainer: t, it: it, times: map[looksam.StepKind][]float64{},
		compile: map[looksam.StepKind]float64{}, peak: map[looksam.StepKind]uint64{}}, nil
}

func (r *runner) close() { r.it.Close() }

// warmUp runs steps until every program of the rule has run once, recording each first run.
func (r *runner) warmUp() error {
	for len(r.compile) < len(r.trainer.Optimizer().Kinds()) {
		kind := r.trainer.Kind(r.trainer.Step())
		seconds, err := r.step()
		if err != nil {
			return err
		}
		if _, seen := r.compile[kind]; !seen {
			r.compile[kind] = seconds
		}
	}
	return nil
}

func (r *runner) step() (float64, error) {
	b, ok := r.it.Next()
	if !ok {
		return 0, errors.New("the benchmark data ended")
	}
	start := time.Now()
	if _, err := r.trainer.TrainStep(b); err != nil {
		return 0, fmt.Errorf("configuration %s: %w", r.cfg.Name, err)
	}
	return time.Since(start).Seconds(), nil
}

// runSteps runs n steps, recording each step's time and the Go heap in use after it.
func (r *runner) runSteps(n int) error {
	var mem runtime.MemStats
	for range n {
		kind := r.trainer.Kind(r.trainer.Step())
		seconds, err := r.step()
		if err != nil {
			return err
		}
		r.times[kind] = append(r.times[kind], seconds)
		runtime.ReadMemStats(&mem)
		r.peak[kind] = max(r.peak[kind], mem.HeapInuse)
	}
	return nil
}

func (r *runner) result(model string, batch int, backend string, epochImages int) Result {
	opt := r.trainer.Optimizer().Config()
	res := Result{
		Name: r.cfg.Name, Rule: opt.Rule, Base: opt.Base, K: opt.K, Model: model, Batch: batch, Backend: backend,
		CompileSecond: map[string]float64{}, Steps: map[string]Stats{}, EpochImages: epochImages,
		PeakHeapMiB: map[string]float64{},
	}
	for kind, seconds := range r.compile {
		res.CompileSecond[string(kind)] = seconds
	}
	for kind, times := range r.times {
		res.Steps[string(kind)] = summarise(times)
		if backend == "go" {
			res.PeakHeapMiB[string(kind)] = float64(r.peak[kind]) / (1 << 20)
		}
	}

	// Mean step time over one k-cycle, from the medians.
	k := float64(opt.K)
	sam, other := res.Steps[string(looksam.KindSAM)].Median, 0.0
	for _, kind := range []looksam.StepKind{looksam.KindPlain, looksam.KindReuse} {
		if s, ok := res.Steps[string(kind)]; ok {
			other = s.Median
		}
	}
	switch kinds := r.trainer.Optimizer().Kinds(); {
	case len(kinds) == 1 && kinds[0] == looksam.KindSAM:
		res.StepSeconds, res.IdealRatio, res.GradsPerStep = sam, 2, 2
	case len(kinds) == 1:
		res.StepSeconds, res.IdealRatio, res.GradsPerStep = other, 1, 1
	default:
		res.StepSeconds = (sam + (k-1)*other) / k
		res.IdealRatio, res.GradsPerStep = 1+1/k, 1+1/k
	}
	if res.StepSeconds > 0 {
		res.ImagesPerSecond = float64(batch) / res.StepSeconds
		res.EpochSeconds = res.StepSeconds * float64(epochImages/batch)
	}
	res.WeightBytes, res.StateBytes = stateBytes(r.trainer)
	if res.WeightBytes > 0 {
		res.ExtraBuffers = float64(res.StateBytes) / float64(res.WeightBytes)
	}
	return res
}

// stateBytes returns the bytes of the trainable weights and of the optimizer's persistent state
// (moments, momentum, g_v; the step counter is a few bytes and counted too).
func stateBytes(t *train.Trainer) (weights, state int64) {
	for v := range t.Context().IterVariables() {
		size := int64(v.Shape().Memory())
		switch {
		case v.Trainable:
			weights += size
		case strings.HasPrefix(v.Scope(), looksam.StateScope):
			state += size
		}
	}
	return weights, state
}

func formatCompile(m map[looksam.StepKind]float64) string {
	var parts []string
	for _, kind := range []looksam.StepKind{looksam.KindPlain, looksam.KindSAM, looksam.KindReuse} {
		if s, ok := m[kind]; ok {
			parts = append(parts, fmt.Sprintf("%s %.2fs", kind, s))
		}
	}
	return strings.Join(parts, ", ")
}

func printTable(w io.Writer, results []Result) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "config\tplain s (min-max)\tsam s (min-max)\treuse s (min-max)\tstep s\timages/s\tepoch s*\tratio\tideal\tstate/params\t")
	cell := func(s Stats) string {
		if s.Count == 0 {
			return "-"
		}
		return fmt.Sprintf("%.3f (%.3f-%.3f)", s.Median, s.Min, s.Max)
	}
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.3f\t%.1f\t%.0f\t%.3f\t%.3f\t%.2f\t\n", r.Name,
			cell(r.Steps["plain"]), cell(r.Steps["sam"]), cell(r.Steps["reuse"]),
			r.StepSeconds, r.ImagesPerSecond, r.EpochSeconds, r.Ratio, r.IdealRatio, r.ExtraBuffers)
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "* epoch time computed from the median step times, not measured over a whole epoch;")
	fmt.Fprintln(w, "  state/params: optimizer state in units of the parameter size (AdamW: 2, plus 1 for g_v with LookSAM)")
}

func writeJSON(path string, results []Result) error {
	data, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func writeCSV(path string, results []Result) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	w := csv.NewWriter(f)
	_ = w.Write([]string{"name", "rule", "base", "k", "model", "batch", "backend",
		"plain_median_s", "sam_median_s", "reuse_median_s", "mean_step_s", "images_per_s",
		"epoch_s_computed", "ratio_to_base", "ideal_ratio", "optimizer_state_bytes", "weight_bytes"})
	for _, r := range results {
		f := func(x float64) string { return strconv.FormatFloat(x, 'g', 6, 64) }
		_ = w.Write([]string{r.Name, string(r.Rule), string(r.Base), strconv.Itoa(r.K), r.Model,
			strconv.Itoa(r.Batch), r.Backend, f(r.Steps["plain"].Median), f(r.Steps["sam"].Median),
			f(r.Steps["reuse"].Median), f(r.StepSeconds), f(r.ImagesPerSecond), f(r.EpochSeconds),
			f(r.Ratio), f(r.IdealRatio), strconv.FormatInt(r.StateBytes, 10), strconv.FormatInt(r.WeightBytes, 10)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		_ = f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Close()
}

// plotAccuracy writes the test accuracy of the given metrics files against wall-clock time, each
// run named by its directory.
func plotAccuracy(stdout io.Writer, path string, files []string) error {
	runs := make([]*curves.Run, len(files))
	for i, file := range files {
		run, err := curves.Read(file, filepath.Base(filepath.Dir(file)))
		if err != nil {
			return err
		}
		runs[i] = run
	}
	written, err := curves.Plot(path, "acc", "time", runs, 0)
	if err != nil {
		return err
	}
	if !written {
		return fmt.Errorf("-accuracy-runs: none of %s has evaluation records; train with -eval-every to record them", strings.Join(files, ", "))
	}
	fmt.Fprintf(stdout, "bench: accuracy plot written to %s\n", path)
	return nil
}

// flagSet reports whether the flag was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
