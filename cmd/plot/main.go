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
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
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
	runs := make([]*runCurves, len(o.files))
	for i, path := range o.files {
		if runs[i], err = readMetrics(path); err != nil {
			return err
		}
		runs[i].name = o.names[i]
		if len(runs[i].train) == 0 {
			fmt.Fprintf(stderr, "plot: %s has no training records; its loss curve is empty\n", path)
		}
	}

	for _, axis := range o.axes {
		for _, metric := range []string{"loss", "acc"} {
			path := fmt.Sprintf("%s-%s-%s.png", o.out, metric, axis)
			written, err := plotMetric(path, metric, axis, runs, o.smooth)
			if err != nil {
				return err
			}
			if written {
				fmt.Fprintln(stdout, path)
			} else {
				fmt.Fprintf(stderr, "plot: no run has %s records: %s not written\n", metricRecordType[metric], path)
			}
		}
	}
	return nil
}

// point is one record of a curve.
type point struct {
	step    int64
	seconds float64 // wall-clock time since the first stretch of the run started
	value   float64
}

// runCurves holds the curves of one run.
type runCurves struct {
	name  string
	train []point // training loss per step
	eval  []point // test accuracy per evaluation
}

// record holds the fields of train.StepRecord and train.EvalRecord that the plots use.
type record struct {
	Type     string  `json:"type"`
	Step     int64   `json:"step"`
	Loss     float64 `json:"loss"`
	Accuracy float64 `json:"accuracy"`
	Elapsed  float64 `json:"elapsed"`
}

// readMetrics reads the training and evaluation records of a metrics file.
//
// Elapsed restarts at 0 when a run resumes, so a drop in Elapsed marks a new stretch, whose times
// are offset by the last time of the previous one. A training record whose step is not past the
// last one also marks a resumption from an earlier checkpoint: the records of the abandoned
// stretch from that step on are dropped.
func readMetrics(path string) (*runCurves, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening metrics file: %w", err)
	}
	defer func() { _ = file.Close() }()

	curves := &runCurves{}
	var offset, lastElapsed float64
	scanner := bufio.NewScanner(file)
	scanner.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for line := 1; scanner.Scan(); line++ {
		text := strings.TrimSpace(scanner.Text())
		if text == "" {
			continue
		}
		var r record
		if err := json.Unmarshal([]byte(text), &r); err != nil {
			return nil, fmt.Errorf("reading %s, line %d: %w; is it a metrics file from cmd/train?", path, line, err)
		}
		if r.Elapsed < lastElapsed {
			offset += lastElapsed
		}
		lastElapsed = r.Elapsed
		p := point{step: r.Step, seconds: offset + r.Elapsed}

		switch r.Type {
		case "train":
			if n := len(curves.train); n > 0 && r.Step <= curves.train[n-1].step {
				curves.train = dropFrom(curves.train, r.Step)
				curves.eval = dropFrom(curves.eval, r.Step+1)
			}
			p.value = r.Loss
			curves.train = append(curves.train, p)
		case "eval":
			p.value = 100 * r.Accuracy
			curves.eval = append(curves.eval, p)
		}
	}
	if err := scanner.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return curves, nil
}

// dropFrom returns the points before step.
func dropFrom(points []point, step int64) []point {
	for i, p := range points {
		if p.step >= step {
			return points[:i]
		}
	}
	return points
}

// smoothed returns the exponential moving average of the values with the given weight, debiased
// as in Adam so that the first points are not pulled towards 0:
//
//	m_i = w m_{i-1} + (1 - w) x_i,  m_0 = 0,  output_i = m_i / (1 - w^i)
func smoothed(points []point, weight float64) []point {
	out := make([]point, len(points))
	var average, bias float64 = 0, 1
	for i, p := range points {
		average = weight*average + (1-weight)*p.value
		bias *= weight
		out[i] = p
		out[i].value = average / (1 - bias)
	}
	return out
}

// metricRecordType names the records that each metric comes from, for messages.
var metricRecordType = map[string]string{"loss": "training", "acc": "evaluation"}

// plotMetric writes one PNG of metric ("loss" or "acc") against axis ("step" or "time") with a
// line per run. It returns false without writing when no run has a point of the metric.
func plotMetric(path, metric, axis string, runs []*runCurves, smooth float64) (bool, error) {
	p := plot.New()
	p.Add(plotter.NewGrid())
	// The legend goes where the curves are not: top right for a falling loss, bottom right for a
	// rising accuracy.
	p.Legend.Top = metric == "loss"
	switch metric {
	case "loss":
		p.Title.Text = "Training loss"
		p.Y.Label.Text = "loss"
		if smooth > 0 {
			p.Y.Label.Text = fmt.Sprintf("loss (moving average, weight %g)", smooth)
		}
	case "acc":
		p.Title.Text = "Test accuracy"
		p.Y.Label.Text = "accuracy (%)"
	}
	scale, unit := timeScale(runs)
	p.X.Label.Text = "step"
	if axis == "time" {
		p.X.Label.Text = "wall-clock time (" + unit + ")"
	}

	drawn := 0
	for i, r := range runs {
		points := r.eval
		if metric == "loss" {
			points = smoothed(r.train, smooth)
		}
		if len(points) == 0 {
			continue
		}
		xy := make(plotter.XYs, len(points))
		for j, pt := range points {
			xy[j].X, xy[j].Y = float64(pt.step), pt.value
			if axis == "time" {
				xy[j].X = pt.seconds / scale
			}
		}
		line, err := plotter.NewLine(xy)
		if err != nil {
			return false, fmt.Errorf("plotting %s of run %s: %w", metric, r.name, err)
		}
		line.Color = plotutil.Color(i)
		line.Width = vg.Points(1.5)
		p.Add(line)
		if metric == "acc" {
			marks, err := plotter.NewScatter(xy)
			if err != nil {
				return false, fmt.Errorf("plotting %s of run %s: %w", metric, r.name, err)
			}
			marks.Color = plotutil.Color(i)
			p.Add(marks)
			p.Legend.Add(r.name, line, marks)
		} else {
			p.Legend.Add(r.name, line)
		}
		drawn++
	}
	if drawn == 0 {
		return false, nil
	}
	if err := p.Save(7*vg.Inch, 4.5*vg.Inch, path); err != nil {
		return false, fmt.Errorf("writing plot %s: %w", path, err)
	}
	return true, nil
}

// timeScale returns the unit of the time axis, chosen from the longest run: seconds up to 2
// minutes, minutes up to 2 hours, hours beyond. It returns the unit's length in seconds.
func timeScale(runs []*runCurves) (float64, string) {
	longest := 0.0
	for _, r := range runs {
		for _, points := range [][]point{r.train, r.eval} {
			if n := len(points); n > 0 {
				longest = math.Max(longest, points[n-1].seconds)
			}
		}
	}
	switch {
	case longest <= 120:
		return 1, "s"
	case longest <= 7200:
		return 60, "min"
	}
	return 3600, "h"
}
