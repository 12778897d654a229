package looksam

import (
	"fmt"
	"slices"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// perPeriod returns the gradient evaluations that a rule needs over k consecutive steps starting
// at a SAM step. That is k + 1 for SAM-k and LookSAM-k (Liu et al. 2022, arXiv:2203.02714), 2k for
// the rules that take a SAM step every step, and k for the base optimizer alone.
func perPeriod(rule Rule, k int) int {
	switch rule {
	case RuleNone:
		return k
	case RuleSAMK, RuleLookSAM, RuleLookLayerSAM:
		return k + 1
	default:
		return 2 * k
	}
}

func TestGradientEvaluationsPerStep(t *testing.T) {
	for _, rule := range Rules {
		for _, k := range []int{1, 2, 5} {
			if k > 1 && ruleSpecs[rule].between == betweenNone {
				continue
			}
			name := fmt.Sprintf("%s/k=%d", rule, k)
			cfg := Config{Rule: rule, Base: BaseAdamW, Rho: 0.05, Alpha: 0.5, K: kFor(rule, k)}
			h := newHarness(t, cfg, newMixedProblem(1).problem(dtypes.Float64))
			const periods = 3
			var fromKinds int
			seen := map[StepKind]bool{}
			for range periods * k {
				kind := h.opt.Kind(h.step)
				seen[kind] = true
				fromKinds += kind.Gradients()
				h.run(0.01)
			}

			// Each program is built once, and its graph calls the loss once per gradient.
			var kinds []StepKind
			for kind := range seen {
				kinds = append(kinds, kind)
			}
			assert.ElementsMatch(t, h.opt.Kinds(), kinds, "%s: Kinds() against the kinds that ran", name)
			for _, kind := range h.opt.Kinds() {
				require.Equal(t, 1, h.builds[kind], "%s: builds of the %s program", name, kind)
				assert.Equal(t, kind.Gradients(), h.lossFns[kind], "%s: loss calls in the %s graph", name, kind)
			}

			// The count from the graphs, step by step, against k + 1 or 2k per period of k steps.
			var fromGraphs int
			for step := range int64(periods * k) {
				kind := h.opt.Kind(step)
				fromGraphs += h.lossFns[kind] / h.builds[kind]
			}
			assert.Equal(t, periods*perPeriod(rule, k), fromGraphs, "%s: gradients over %d steps counted from the graphs", name, periods*k)
			assert.Equal(t, fromGraphs, fromKinds, "%s: StepKind.Gradients against the graphs", name)
		}
	}
}

func TestKindsCoverSchedule(t *testing.T) {
	for _, rule := range Rules {
		for _, k := range []int{1, 3} {
			if k > 1 && ruleSpecs[rule].between == betweenNone {
				continue
			}
			opt, err := New(Config{Rule: rule, K: kFor(rule, k), Rho: 0.1})
			require.NoError(t, err)
			ref := newRefOptimizer(opt.Config(), dtypes.Float64)
			var used []StepKind
			for step := range int64(12) {
				kind := opt.Kind(step)
				assert.Equal(t, ref.kind(step), kind, "%s/k=%d: kind of step %d", rule, k, step)
				if !slices.Contains(used, kind) {
					used = append(used, kind)
				}
			}
			assert.ElementsMatch(t, used, opt.Kinds(), "%s/k=%d: Kinds()", rule, k)
		}
	}
}
