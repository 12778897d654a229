// Command train trains a Vision Transformer on Fashion-MNIST or MNIST with a sharpness-aware
// optimizer, evaluates it on the test split and saves a checkpoint.
//
// By default it trains the mnist-p7 ViT with LookSAM-5 over AdamW on the pure-Go backend, resuming
// from the newest checkpoint in -checkpoint-dir when there is one:
//
//	go run ./cmd/train
//	go run ./cmd/train -optimizer sam -rho 0.05 -epochs 3
//	go run ./cmd/train -list-devices -backend xla:cpu
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/looksam/vitsam/datasets"
	"github.com/looksam/vitsam/graphx/dotgrad"
	"github.com/looksam/vitsam/models/vit"
	"github.com/looksam/vitsam/optimizers/looksam"
	"github.com/looksam/vitsam/pjrt"
	"github.com/looksam/vitsam/train"
)

// flags holds the command line.
type flags struct {
	dataset, dataDir, model, optimizer, base string
	k                                        int
	rho, alpha                               float64
	perTensor                                bool
	layerRatioMax                            float64
	batch, epochs                            int
	steps                                    int64
	lr, minLR                                float64
	warmup                                   int64
	decay                                    string
	weightDecay, momentum, clip, smoothing   float64
	dropout                                  float64
	seed                                     uint64
	backend                                  string
	checkpointDir                            string
	checkpointEvery                          int64
	keep                                     int
	noResume                                 bool
	metrics                                  string
	evalEvery                                int64
	listDevices                              bool
	devices                                  int
	perReplica                               bool
	dumpHLO                                  string

	// Augmentation, mixup and paper presets (augment.go).
	augmentFlags
	preset string
}

func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.dataset, "dataset", "fashion-mnist", "dataset: "+strings.Join(datasetNames, ", "))
	fs.StringVar(&f.dataDir, "data-dir", "", "directory of the dataset's files (default: "+datasets.DefaultFashionMNISTDir+" for fashion-mnist, the GoMNIST module for mnist; required for CIFAR)")
	fs.StringVar(&f.model, "model", vit.DefaultPreset, "model preset: "+strings.Join(vit.PresetNames(), ", "))
	fs.StringVar(&f.optimizer, "optimizer", string(looksam.RuleLookSAM), "update rule: "+ruleNames()+"; adamw, sgd and lamb mean that base optimizer alone")
	fs.StringVar(&f.base, "base", string(looksam.BaseAdamW), "base optimizer: sgd, adamw or lamb")
	fs.IntVar(&f.k, "k", 0, "period of SAM steps for sam-k, looksam and looklayersam (0: 5 for those rules, 1 for the others)")
	fs.Float64Var(&f.rho, "rho", 0.1, "perturbation radius rho")
	fs.Float64Var(&f.alpha, "alpha", 0.1, "LookSAM's weight alpha of the reused g_v component")
	fs.Float64Var(&f.layerRatioMax, "layer-ratio-max", 0, "cap on LayerSAM's |w_i|/|g_i| (0: no cap, as in the paper)")
	fs.BoolVar(&f.perTensor, "per-tensor", false, "take norms and the g_v projection per tensor instead of over the whole parameter vector")
	fs.IntVar(&f.batch, "batch", 128, "batch size")
	fs.IntVar(&f.epochs, "epochs", 3, "epochs over the training split (ignored when -steps is set)")
	fs.Int64Var(&f.steps, "steps", 0, "total training steps (0: use -epochs)")
	fs.Float64Var(&f.lr, "lr", 2e-3, "peak learning rate")
	fs.Float64Var(&f.minLR, "min-lr", 1e-5, "final learning rate of the decay")
	fs.Int64Var(&f.warmup, "warmup", 100, "linear warmup steps")
	fs.StringVar(&f.decay, "decay", "cosine", "learning-rate decay after warmup: cosine, linear or constant")
	fs.Float64Var(&f.weightDecay, "wd", 0.05, "weight decay (decoupled for adamw and lamb, L2 for sgd)")
	fs.Float64Var(&f.momentum, "momentum", 0.9, "SGD momentum")
	fs.Float64Var(&f.clip, "clip", 1.0, "clip the gradient's global norm to this value (0: no clipping)")
	fs.Float64Var(&f.smoothing, "label-smoothing", 0, "label smoothing epsilon")
	fs.Float64Var(&f.dropout, "dropout", -1, "dropout rate (default: the preset's)")
	fs.Uint64Var(&f.seed, "seed", 1, "seed of the initial weights, the data order and dropout")
	fs.StringVar(&f.backend, "backend", pjrt.AutoConfig, "backend: auto (XLA when a PJRT plugin is found, else pure Go), go, xla, xla:cpu, xla:/path/plugin.so, cuda, tpu")
	fs.StringVar(&f.checkpointDir, "checkpoint-dir", autoCheckpointDir, "directory of checkpoints; training resumes from its newest one (auto: runs/DATASET-MODEL-OPTIMIZER[-kK][-BASE]; \"\": no checkpoints)")
	fs.Int64Var(&f.checkpointEvery, "checkpoint-every", 200, "steps between checkpoints (0: only at the end)")
	fs.IntVar(&f.keep, "keep", 3, "number of checkpoints to keep")
	fs.BoolVar(&f.noResume, "no-resume", false, "start from scratch even when -checkpoint-dir has a checkpoint")
	fs.StringVar(&f.metrics, "metrics", "", "JSON-lines metrics file (default: metrics.jsonl in -checkpoint-dir; \"-\" disables)")
	fs.Int64Var(&f.evalEvery, "eval-every", 0, "steps between test evaluations (0: at the end only)")
	fs.BoolVar(&f.listDevices, "list-devices", false, "print the backend's devices and exit")
	fs.IntVar(&f.devices, "devices", 1, "devices that share each batch, data-parallel (0: every device of the backend; more than 1 needs XLA)")
	fs.BoolVar(&f.perReplica, "per-replica-perturbation", false, "compute SAM's eps on each device from its local gradient (m-sharpness) instead of the averaged one")
	fs.StringVar(&f.dumpHLO, "dump-hlo", "", "directory that receives the StableHLO text of each compiled program (XLA backend)")
	f.augmentFlags.register(fs)
	fs.StringVar(&f.preset, "preset", "", "training preset from the LookSAM paper, whose values explicit flags override: "+strings.Join(train.PresetNames(), ", "))
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: all options are flags, see -help", fs.Arg(0))
	}
	if err := applyPreset(fs, f.preset); err != nil {
		return nil, err
	}
	if f.checkpointDir == autoCheckpointDir {
		f.checkpointDir = f.defaultCheckpointDir()
	}
	return f, nil
}

func ruleNames() string {
	names := make([]string, len(looksam.Rules))
	for i, r := range looksam.Rules {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}

// optimizerConfig maps the flags to the optimizer configuration.
func (f *flags) optimizerConfig() looksam.Config {
	rule, base := looksam.Rule(f.optimizer), looksam.BaseName(f.base)
	switch looksam.BaseName(f.optimizer) {
	case looksam.BaseAdamW, looksam.BaseSGD, looksam.BaseLAMB:
		rule, base = looksam.RuleNone, looksam.BaseName(f.optimizer)
	}
	return looksam.Config{
		Rule: rule, Base: base, Rho: f.rho, K: f.k, Alpha: f.alpha, PerTensor: f.perTensor, LayerRatioMax: f.layerRatioMax,
		Momentum: f.momentum, WeightDecay: f.weightDecay, ClipNorm: f.clip,
	}
}

// validate checks every flag value that does not need the data, so a bad value fails before any
// work starts.
func (f *flags) validate() error {
	if !slices.Contains(datasetNames, f.dataset) {
		return fmt.Errorf("invalid -dataset %q: use one of %s", f.dataset, strings.Join(datasetNames, ", "))
	}
	if strings.HasPrefix(f.dataset, "cifar") && f.dataDir == "" {
		return fmt.Errorf("missing -data-dir for %s: give the directory of the CIFAR binary files (the \"binary version\" of the dataset)", f.dataset)
	}
	model, err := vit.Preset(f.model)
	if err != nil {
		return fmt.Errorf("invalid -model: %w", err)
	}
	if err := f.augmentFlags.validate(model.ImageSize); err != nil {
		return err
	}
	if f.batch < 1 {
		return fmt.Errorf("invalid -batch %d: it must be at least 1", f.batch)
	}
	if f.steps < 0 {
		return fmt.Errorf("invalid -steps %d: it must be positive, or 0 to use -epochs", f.steps)
	}
	if f.steps == 0 && f.epochs < 1 {
		return fmt.Errorf("invalid -epochs %d: it must be at least 1", f.epochs)
	}
	if f.dropout >= 1 {
		return fmt.Errorf("invalid -dropout %g: it must be in [0, 1)", f.dropout)
	}
	if f.devices < 0 {
		return fmt.Errorf("invalid -devices %d: it must be at least 1, or 0 for every device", f.devices)
	}
	if f.evalEvery < 0 || f.checkpointEvery < 0 || f.keep < 0 {
		return fmt.Errorf("invalid -eval-every %d, -checkpoint-every %d or -keep %d: none may be negative", f.evalEvery, f.checkpointEvery, f.keep)
	}
	if _, err := looksam.New(f.optimizerConfig()); err != nil {
		return fmt.Errorf("invalid optimizer flags: %w", err)
	}
	schedule := train.Schedule{Peak: f.lr, Floor: f.minLR, Warmup: f.warmup, Total: 1, Decay: f.decay}
	if err := schedule.Validate(); err != nil {
		return fmt.Errorf("invalid learning-rate flags: %w", err)
	}
	return nil
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "train:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	f, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if err := f.validate(); err != nil {
		return err
	}
	if f.preset != "" {
		printPreset(stdout, f.preset)
	}

	// Backend.
	dotgrad.Install()
	backend, choice, err := pjrt.Select(f.backend)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, choice)
	if f.listDevices {
		return pjrt.ListDevices(stdout, backend)
	}

	// Data.
	trainData, testData, err := loadData(f.dataset, f.dataDir)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "data: %s, %d training and %d test images of %dx%dx%d\n",
		f.dataset, trainData.Len(), testData.Len(), trainData.Height, trainData.Width, trainData.Channels)
	fmt.Fprintf(stdout, "augmentation: %s\n", f.augmentFlags.describe())

	// Model, optimizer and schedule.
	modelCfg, _ := vit.Preset(f.model)
	if f.dropout >= 0 {
		modelCfg.Dropout = f.dropout
	}
	if modelCfg.ImageSize != trainData.Height || modelCfg.Channels != trainData.Channels {
		return fmt.Errorf("model %s takes %dx%dx%d images but %s has %dx%dx%d: choose an mnist-* preset for MNIST and Fashion-MNIST, a cifar10-* or cifar100-* preset for CIFAR",
			f.model, modelCfg.ImageSize, modelCfg.ImageSize, modelCfg.Channels, f.dataset, trainData.Height, trainData.Width, trainData.Channels)
	}
	steps := f.steps
	if steps == 0 {
		steps = int64(f.epochs) * int64(trainData.Len()/f.batch)
	}
	cfg := train.Config{
		Model: modelCfg, Optimizer: f.optimizerConfig(), Seed: f.seed, BatchSize: f.batch,
		LabelSmoothing: f.smoothing,
		Mixup:          f.mixup,
		Schedule:       train.Schedule{Peak: f.lr, Floor: f.minLR, Warmup: f.warmup, Total: steps, Decay: f.decay},
	}
	cfg.Devices, cfg.PerReplicaPerturbation, cfg.DumpHLODir = f.devices, f.perReplica, f.dumpHLO
	if cfg.Devices == 0 {
		cfg.Devices = len(choice.Devices)
	}
	trainer, err := train.NewTrainer(backend, cfg)
	if err != nil {
		return err
	}
	opt := trainer.Optimizer().Config()
	fmt.Fprintf(stdout, "model: %s, %d parameters; optimizer: %s over %s (rho %g, k %d, alpha %g); batch %d, %d steps (%.2f epochs)\n",
		f.model, modelCfg.NumParams(), opt.Rule, opt.Base, opt.Rho, opt.K, opt.Alpha, f.batch, steps,
		float64(steps*int64(f.batch))/float64(trainData.Len()))

	// Resume.
	if f.checkpointDir != "" && !f.noResume {
		latest, err := train.LatestCheckpoint(f.checkpointDir)
		if err != nil {
			return err
		}
		if latest != "" {
			if err := trainer.Restore(latest); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "resuming from %s at step %d (use -no-resume or another -checkpoint-dir to start over)\n", latest, trainer.Step())
		}
	}

	// Metrics.
	var metrics io.Writer
	metricsPath := f.metrics
	if metricsPath == "" && f.checkpointDir != "" {
		metricsPath = f.checkpointDir + "/metrics.jsonl"
	}
	if metricsPath != "" && metricsPath != "-" {
		file, err := train.OpenMetrics(metricsPath)
		if err != nil {
			return err
		}
		defer func() { _ = file.Close() }()
		metrics = file
		fmt.Fprintf(stdout, "metrics: %s\n", metricsPath)
	}

	start := time.Now()
	summary, err := train.Run(trainer, train.RunOptions{
		Train: trainData, Test: testData, Steps: steps, EvalEvery: f.evalEvery,
		CheckpointDir: f.checkpointDir, CheckpointEvery: f.checkpointEvery, CheckpointKeep: f.keep,
		Metrics: metrics, Progress: stdout, Augment: f.augmentFlags.source(trainData),
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "test accuracy %.2f%% (loss %.4f) after %d steps in %s\n",
		100*summary.TestAccuracy, summary.TestLoss, summary.Steps, time.Since(start).Round(time.Second))
	if summary.LastCheckpoint != "" {
		fmt.Fprintf(stdout, "checkpoint: %s\n", summary.LastCheckpoint)
	}
	return nil
}

// withInstallHint adds the install command to a missing-dataset error when the loader's message
// lacks it.
func withInstallHint(err error, dataset string) error {
	if errors.Is(err, fs.ErrNotExist) && dataset == "fashion-mnist" && !strings.Contains(err.Error(), "apt-get") {
		return fmt.Errorf("%w (install it with: sudo apt-get install dataset-fashion-mnist, or pass -data-dir)", err)
	}
	return err
}

// datasetNames lists the values of -dataset.
var datasetNames = []string{"fashion-mnist", "mnist", "cifar10", "cifar100"}

// loadData loads the training and test splits of the named dataset and normalises them with the
// dataset's mean and standard deviation (per channel for CIFAR).
func loadData(name, dir string) (trainData, testData *datasets.Dataset, err error) {
	load := func(split datasets.Split) (*datasets.Dataset, error) {
		var d *datasets.Dataset
		var err error
		switch name {
		case "mnist":
			if d, err = datasets.LoadMNIST(dir, split); err == nil {
				err = d.Normalize(datasets.MNISTMean, datasets.MNISTStd)
			}
		case "cifar10":
			if d, err = datasets.LoadCIFAR10(dir, split); err == nil {
				err = d.NormalizeChannels(datasets.CIFAR10Mean[:], datasets.CIFAR10Std[:])
			}
		case "cifar100":
			if d, err = datasets.LoadCIFAR100(dir, split, datasets.CIFAR100Fine); err == nil {
				err = d.NormalizeChannels(datasets.CIFAR100Mean[:], datasets.CIFAR100Std[:])
			}
		default:
			if d, err = datasets.LoadFashionMNIST(dir, split); err != nil {
				return nil, withInstallHint(err, name)
			}
			err = d.Normalize(datasets.FashionMNISTMean, datasets.FashionMNISTStd)
		}
		return d, err
	}
	if trainData, err = load(datasets.Train); err != nil {
		return nil, nil, err
	}
	if testData, err = load(datasets.Test); err != nil {
		return nil, nil, err
	}
	return trainData, testData, nil
}

// autoCheckpointDir is the -checkpoint-dir value that derives the directory from the run's flags.
const autoCheckpointDir = "auto"

// defaultCheckpointDir returns runs/DATASET-MODEL-OPTIMIZER, with -kK when -k is set and the base
// optimizer when it is not AdamW, so that runs of different configurations never resume from each
// other's checkpoints.
func (f *flags) defaultCheckpointDir() string {
	name := fmt.Sprintf("%s-%s-%s", f.dataset, f.model, f.optimizer)
	if f.k > 0 {
		name += fmt.Sprintf("-k%d", f.k)
	}
	if f.base != string(looksam.BaseAdamW) && looksam.BaseName(f.optimizer) != looksam.BaseName(f.base) {
		switch looksam.BaseName(f.optimizer) {
		case looksam.BaseAdamW, looksam.BaseSGD, looksam.BaseLAMB:
		default:
			name += "-" + f.base
		}
	}
	return filepath.Join("runs", name)
}
