// Command plot draws the training curves of one or more runs from the metrics files that
// cmd/train writes, which hold JSON lines of train.StepRecord and train.EvalRecord. It plots the
// smoothed training loss and the test accuracy, each against the step and against the wall-clock
// time, with one line per run and a legend.
//
//	go run ./cmd/plot -out curves.png runs/sam/metrics.jsonl runs/looksam/metrics.jsonl
//
// writes curves-loss-step.png, curves-acc-step.png, curves-loss-time.png and curves-acc-time.png.
// -x step or -x time writes only the files of that axis. Runs are named by the directory of their
// metrics file, or by -names.
//
// A metrics file that a resumed run appended to holds several stretches. The time axis adds
// them up, and when a resumed run repeats steps that an interrupted one had already logged, the
// later records replace the earlier ones.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/looksam/vitsam/cmd/internal/curves"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
}

// options holds the command line.
type options struct {
	out    string
	axes   []string // "step", "time" or both
	names  []string
	smooth float64
	files  []string
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("plot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var axis, names string
	fs.StringVar(&o.out, "out", "", "output prefix; a trailing .png is dropped, and PREFIX-loss-step.png, PREFIX-acc-time.png etc. are written")
	fs.StringVar(&axis, "x", "both", "x axis: step, time or both")
	fs.StringVar(&names, "names", "", "comma-separated legend names, one per metrics file (default: each file's directory)")
	fs.Float64Var(&o.smooth, "smooth", 0.9, "weight of the exponential moving average of the training loss, in [0, 1) (0: raw loss)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: plot -out PREFIX [-x step|time|both] [-names a,b] METRICS.jsonl...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	o.files = fs.Args()

	switch {
	case o.out == "":
		return nil, fmt.Errorf("missing -out: give the prefix of the PNG files to write")
	case len(o.files) == 0:
		return nil, fmt.Errorf("missing metrics files: pass one or more metrics.jsonl paths after the flags")
	case !(o.smooth >= 0 && o.smooth < 1):
		return nil, fmt.Errorf("invalid -smooth %g: it must be in [0, 1)", o.smooth)
	}
	switch axis {
	case "step", "time":
		o.axes = []string{axis}
	case "both":
		o.axes = []string{"step", "time"}
	default:
		return nil, fmt.Errorf("invalid -x %q: use step, time or both", axis)
	}
	o.out = strings.TrimSuffix(o.out, ".png")
	if names != "" {
		o.names = strings.Split(names, ",")
		if len(o.names) != len(o.files) {
			return nil, fmt.Errorf("invalid -names: %d names for %d metrics files; give one name per file", len(o.names), len(o.files))
		}
	} else {
		o.names = defaultNames(o.files)
	}
	return o, nil
}

// defaultNames names each file by its directory, or by its path where two directories share a
// name.
func defaultNames(files []string) []string {
	names := make([]string, len(files))
	count := map[string]int{}
	for i, path := range files {
		names[i] = filepath.Base(filepath.Dir(path))
		if names[i] == "." || names[i] == string(filepath.Separator) {
			names[i] = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
		}
		count[names[i]]++
	}
	for i, path := range files {
		if count[names[i]] > 1 {
			names[i] = path
		}
	}
	return names
}

func run(args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	runs := make([]*curves.Run, len(o.files))
	for i, path := range o.files {
		if runs[i], err = curves.Read(path, o.names[i]); err != nil {
			return err
		}
		if !runs[i].HasTraining() {
			fmt.Fprintf(stderr, "plot: %s has no training records; its loss curve is empty\n", path)
		}
	}

	for _, axis := range o.axes {
		for _, metric := range []string{"loss", "acc"} {
			path := fmt.Sprintf("%s-%s-%s.png", o.out, metric, axis)
			written, err := curves.Plot(path, metric, axis, runs, o.smooth)
			if err != nil {
				return err
			}
			if written {
				fmt.Fprintln(stdout, path)
			} else {
				fmt.Fprintf(stderr, "plot: no run has %s records: %s not written\n", curves.RecordType(metric), path)
			}
		}
	}
	return nil
}
