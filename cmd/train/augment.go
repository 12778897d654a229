package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/looksam/vitsam/datasets"
	"github.com/looksam/vitsam/train"
)

// augmentFlags are the data augmentation and soft-target flags.
type augmentFlags struct {
	mixup       float64
	randAugment string
	cropPad     int
	flip        bool
}

// register adds the augmentation flags to fs.
func (a *augmentFlags) register(fs *flag.FlagSet) {
	fs.Float64Var(&a.mixup, "mixup", 0, "mixup alpha: mix each training batch with weights drawn from Beta(alpha, alpha) (0: off)")
	fs.StringVar(&a.randAugment, "randaugment", "", "RandAugment N,M: N operations per image at magnitude M in [0, 30], for example 2,9 (\"\": off)")
	fs.IntVar(&a.cropPad, "crop-pad", 0, "random crop of the original size from the image padded with this many zero pixels per side (0: off)")
	fs.BoolVar(&a.flip, "flip", false, "mirror training images left to right with probability 1/2 (off by default: it changes what digits mean)")
}

// validate returns an error naming the first invalid augmentation flag. imageSize is the side
// of the model's input.
func (a *augmentFlags) validate(imageSize int) error {
	if a.mixup < 0 || math.IsNaN(a.mixup) || math.IsInf(a.mixup, 0) {
		return fmt.Errorf("invalid -mixup %g: it must be a positive alpha, or 0 for no mixup", a.mixup)
	}
	if _, _, err := datasets.ParseRandAugment(a.randAugment); err != nil {
		return fmt.Errorf("invalid -randaugment: %w", err)
	}
	if a.cropPad < 0 || a.cropPad >= imageSize {
		return fmt.Errorf("invalid -crop-pad %d: it must be in [0, %d), below the %d-pixel side of the model's input", a.cropPad, imageSize, imageSize)
	}
	return nil
}

// source returns the augmented source of the training examples, or nil without augmentation.
// The crop and flip come first, then RandAugment on the cropped image.
func (a *augmentFlags) source(d *datasets.Dataset) datasets.Source {
	var source datasets.Source
	if a.cropPad > 0 || a.flip {
		source = &datasets.PadCropFlip{Dataset: d, Pad: a.cropPad, Flip: a.flip}
	}
	if n, m, _ := datasets.ParseRandAugment(a.randAugment); n > 0 {
		if source == nil {
			source = d
		}
		source = &datasets.RandAugment{Source: source, N: n, Magnitude: m}
	}
	return source
}

// describe returns a one-line summary of the augmentation for the log.
func (a *augmentFlags) describe() string {
	var parts []string
	if a.cropPad > 0 {
		parts = append(parts, fmt.Sprintf("random crop with padding %d", a.cropPad))
	}
	if a.flip {
		parts = append(parts, "horizontal flip")
	}
	if a.randAugment != "" {
		parts = append(parts, "RandAugment "+a.randAugment)
	}
	if a.mixup > 0 {
		parts = append(parts, fmt.Sprintf("mixup alpha %g", a.mixup))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// presetFlagValues returns the flag values that preset p sets, by flag name.
func presetFlagValues(p train.Preset) map[string]string {
	values := map[string]string{}
	text := func(name, value string) {
		if value != "" {
			values[name] = value
		}
	}
	number := func(name string, value float64) {
		if value != 0 {
			values[name] = strconv.FormatFloat(value, 'g', -1, 64)
		}
	}
	text("model", p.Model)
	text("optimizer", string(p.Rule))
	text("base", string(p.Base))
	number("k", float64(p.K))
	number("batch", float64(p.BatchSize))
	number("epochs", float64(p.Epochs))
	number("lr", p.LearningRate)
	number("wd", p.WeightDecay)
	number("clip", p.ClipNorm)
	return values
}

// applyPreset sets the flags of the named preset that the command line did not set. It must run
// after fs.Parse. An empty name does nothing.
func applyPreset(fs *flag.FlagSet, name string) error {
	if name == "" {
		return nil
	}
	p, err := train.LookupPreset(name)
	if err != nil {
		return fmt.Errorf("invalid -preset: %w", err)
	}
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	for flagName, value := range presetFlagValues(p) {
		if explicit[flagName] {
			continue
		}
		if err := fs.Set(flagName, value); err != nil {
			return fmt.Errorf("applying preset %s: flag -%s=%s: %w", name, flagName, value, err)
		}
	}
	return nil
}

// printPreset writes which values the named preset set, which ones are unverified, and that
// explicit flags override it.
func printPreset(w io.Writer, name string) {
	p, err := train.LookupPreset(name)
	if err != nil {
		return
	}
	values := presetFlagValues(p)
	names := make([]string, 0, len(values))
	for flagName := range values {
		names = append(names, "-"+flagName+"="+values[flagName])
	}
	slices.Sort(names)
	fmt.Fprintf(w, "preset %s (%s): %s; explicit flags override these\n", p.Name, p.Table, strings.Join(names, " "))
	if len(p.Unverified) > 0 {
		unverified := make([]string, len(p.Unverified))
		for i, field := range p.Unverified {
			unverified[i] = "-" + presetFieldFlags[field]
		}
		fmt.Fprintf(w, "preset %s: NOTE: the values of %s were not checked against the paper's table\n",
			p.Name, strings.Join(unverified, ", "))
	}
}

// presetFieldFlags maps the fields of train.Preset to the flags they set.
var presetFieldFlags = map[string]string{
	"Model": "model", "Rule": "optimizer", "Base": "base", "K": "k", "BatchSize": "batch",
	"Epochs": "epochs", "LearningRate": "lr", "WeightDecay": "wd", "ClipNorm": "clip",
}
