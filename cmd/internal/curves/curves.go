// Package curves reads the JSON-lines metrics files of train.Run and plots their training loss
// and test accuracy against steps or wall-clock time, for cmd/plot and cmd/bench.
package curves

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Read reads the curves of the metrics file at path, to be shown under name in legends.
func Read(path, name string) (*Run, error) {
	r, err := readMetrics(path)
	if err != nil {
		return nil, err
	}
	r.name = name
	return r, nil
}

// HasTraining reports whether the run has training records.
func (r *Run) HasTraining() bool { return len(r.train) > 0 }

// Plot writes one PNG of metric ("loss" or "acc") against axis ("step" or "time") with a line per
// run, and reports whether any run had records of that metric.
func Plot(path, metric, axis string, runs []*Run, smooth float64) (bool, error) {
	return plotMetric(path, metric, axis, runs, smooth)
}

// RecordType names the records that a metric comes from ("training" or "evaluation").
func RecordType(metric string) string { return metricRecordType[metric] }

// point is one record of a curve.
type point struct {
	step    int64
	seconds float64 // wall-clock time since the first stretch of the run started
	value   float64
}

// Run holds the training-loss and test-accuracy curves of one run.
type Run struct {
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
func readMetrics(path string) (*Run, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening metrics file: %w", err)
	}
	defer func() { _ = file.Close() }()

	curves := &Run{}
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
func plotMetric(path, metric, axis string, runs []*Run, smooth float64) (bool, error) {
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
func timeScale(runs []*Run) (float64, string) {
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
