package main

import (
	"fmt"
	"image/color"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// plotCost writes a PNG of the measured cost ratio to the base optimizer against k, one line per
// rule with a k (sam-k, looksam, looklayersam), the ideal 1 + 1/k, and SAM's ratio as a
// horizontal reference.
func plotCost(path string, results []Result) error {
	p := plot.New()
	p.Title.Text = "Cost per step relative to the base optimizer"
	p.X.Label.Text = "k (steps per SAM step)"
	p.Y.Label.Text = "time ratio to base"
	p.Add(plotter.NewGrid())

	byRule := map[string]plotter.XYs{}
	maxK := 1
	samRatio := 0.0
	for _, r := range results {
		if r.Ratio == 0 {
			continue
		}
		switch {
		case r.IdealRatio == 2 && r.K == 1:
			samRatio = r.Ratio
		case r.IdealRatio < 2 && r.IdealRatio > 1:
			byRule[string(r.Rule)] = append(byRule[string(r.Rule)], plotter.XY{X: float64(r.K), Y: r.Ratio})
			maxK = max(maxK, r.K)
		}
	}
	if len(byRule) == 0 && samRatio == 0 {
		return fmt.Errorf("nothing to plot in %s: the configurations need a base optimizer and at least one SAM rule", path)
	}

	var ideal plotter.XYs
	for k := 1; k <= max(maxK, 2); k++ {
		ideal = append(ideal, plotter.XY{X: float64(k), Y: 1 + 1/float64(k)})
	}
	idealLine, err := plotter.NewLine(ideal)
	if err != nil {
		return err
	}
	idealLine.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(idealLine)
	p.Legend.Add("ideal 1 + 1/k", idealLine)

	rules := make([]string, 0, len(byRule))
	for rule := range byRule {
		rules = append(rules, rule)
	}
	sort.Strings(rules)
	for i, rule := range rules {
		points := byRule[rule]
		sort.Slice(points, func(a, b int) bool { return points[a].X < points[b].X })
		line, scatter, err := plotter.NewLinePoints(points)
		if err != nil {
			return err
		}
		line.Color = plotColor(i)
		scatter.Color = plotColor(i)
		p.Add(line, scatter)
		p.Legend.Add(rule, line, scatter)
	}
	if samRatio > 0 {
		sam, err := plotter.NewLine(plotter.XYs{{X: 1, Y: samRatio}, {X: float64(max(maxK, 2)), Y: samRatio}})
		if err != nil {
			return err
		}
		sam.Color = plotColor(len(rules))
		p.Add(sam)
		p.Legend.Add(fmt.Sprintf("sam (every step): %.2f", samRatio), sam)
	}
	p.Y.Min = 0.9
	p.Y.Max = max(2.3, samRatio+0.3)
	p.Legend.Top = true
	if err := p.Save(6*vg.Inch, 4*vg.Inch, path); err != nil {
		return fmt.Errorf("writing plot %s: %w", path, err)
	}
	return nil
}

// plotColor returns the i-th colour of gonum's default palette.
func plotColor(i int) color.Color {
	palette := plotutil.SoftColors
	return palette[i%len(palette)]
}
