// Package looksam implements Sharpness-Aware Minimization and its efficient variants as GoMLX
// graphs: SAM (Foret et al. 2020, arXiv:2010.01412), SAM-k, LookSAM-k, LayerSAM and
// Look-LayerSAM (Liu et al. 2022, "Towards Efficient and Scalable Sharpness-Aware Minimization",
// arXiv:2203.02714), and ASAM (Kwon et al. 2021, arXiv:2102.11600), each over SGD with momentum,
// AdamW or LAMB.
//
// A training step is one of three kinds, chosen on the host by the step number (see
// Optimizer.Kind), and each kind is its own compiled program:
//
//   - KindPlain: one gradient g at w, handed to the base optimizer.
//   - KindSAM: g at w, the perturbation eps(w, g), the gradient g_s at w + eps, and the base
//     optimizer applied to g_s at w. LookSAM also stores g_v, the part of g_s orthogonal to g.
//   - KindReuse (LookSAM only): one gradient g at w; the base optimizer receives
//     g + alpha * (|g| / |g_v|) * g_v with the g_v of the last SAM step.
//
// docs/algorithms.md gives every rule as equations and the reasons for each interpretation.
package looksam

import (
	"fmt"
	"math"
	"strings"
)

// Rule names a sharpness-aware update rule.
type Rule string

const (
	// RuleNone is the base optimizer alone: every step is KindPlain.
	RuleNone Rule = "none"
	// RuleSAM takes the SAM gradient on every step: eps = rho * g / |g|.
	RuleSAM Rule = "sam"
	// RuleSAMK takes the SAM gradient on steps where step mod k = 0 and the plain gradient otherwise.
	RuleSAMK Rule = "sam-k"
	// RuleLookSAM is LookSAM-k: SAM steps every k-th step, reuse steps in between.
	RuleLookSAM Rule = "looksam"
	// RuleLayerSAM takes the SAM gradient on every step with the layer-wise perturbation
	// eps_i = rho * (|w_i| / |g_i|) * g_i / |g|.
	RuleLayerSAM Rule = "layersam"
	// RuleLookLayerSAM is LookSAM-k with the LayerSAM perturbation on its SAM steps.
	RuleLookLayerSAM Rule = "looklayersam"
	// RuleASAM takes the SAM gradient on every step with ASAM's element-wise adaptive perturbation
	// eps = rho * T^2 g / |T g|, T = |w| + eta.
	RuleASAM Rule = "asam"
)

// Rules lists every rule in the order the documentation presents them.
var Rules = []Rule{RuleNone, RuleSAM, RuleSAMK, RuleLookSAM, RuleLayerSAM, RuleLookLayerSAM, RuleASAM}

// perturbation is the shape of eps used on SAM steps.
type perturbation int

const (
	perturbNone     perturbation = iota
	perturbGlobal                // eps = rho * g / |g|
	perturbLayer                 // eps_i = rho * (|w_i| / |g_i|) * g_i / |g|
	perturbAdaptive              // eps = rho * T^2 g / |T g|
)

// between is the update of the steps that are not SAM steps.
type between int

const (
	betweenNone  between = iota // every step is a SAM step (or, for RuleNone, a plain step)
	betweenPlain                // the base optimizer on g
	betweenReuse                // the base optimizer on g + alpha * (|g| / |g_v|) * g_v
)

type ruleSpec struct {
	perturbation perturbation
	between      between
}

var ruleSpecs = map[Rule]ruleSpec{
	RuleNone:         {perturbNone, betweenNone},
	RuleSAM:          {perturbGlobal, betweenNone},
	RuleSAMK:         {perturbGlobal, betweenPlain},
	RuleLookSAM:      {perturbGlobal, betweenReuse},
	RuleLayerSAM:     {perturbLayer, betweenNone},
	RuleLookLayerSAM: {perturbLayer, betweenReuse},
	RuleASAM:         {perturbAdaptive, betweenNone},
}

// BaseName names a base optimizer.
type BaseName string

const (
	// BaseSGD is SGD with momentum, optionally Nesterov.
	BaseSGD BaseName = "sgd"
	// BaseAdamW is Adam with decoupled weight decay (Loshchilov and Hutter 2019, arXiv:1711.05101).
	BaseAdamW BaseName = "adamw"
	// BaseLAMB is LAMB (You et al. 2020, arXiv:1904.00962): the AdamW direction scaled per tensor by
	// the trust ratio |w| / |update|.
	BaseLAMB BaseName = "lamb"
)

// Bases lists every base optimizer.
var Bases = []BaseName{BaseSGD, BaseAdamW, BaseLAMB}

// DefaultNoDecay are the variable names excluded from weight decay and from LAMB's layer adaptation:
// biases, LayerNorm scales and offsets, the class token and the position embedding, as the ViT of
// models/vit names them.
var DefaultNoDecay = []string{"bias", "scale", "offset", "cls_token", "pos_embedding"}

// Config is the configuration of a sharpness-aware optimizer. The learning rate is not part of it:
// the caller passes it to every step, so a schedule is computed on the host. Zero values of the float fields that
// have a default (Beta1, Beta2, AdamEpsilon, NormEpsilon, ProjectionTolerance, ASAMEta) take it; use
// New to validate and fill them.
type Config struct {
	Rule Rule     // The update rule; "" means RuleNone.
	Base BaseName // The base optimizer; "" means BaseAdamW.

	// Rho is the radius of the perturbation (rho in SAM, Eq. 2 of Foret et al.). Must be >= 0.
	Rho float64
	// K is the period of SAM steps for sam-k, looksam and looklayersam: steps with step mod K = 0
	// are SAM steps. 0 takes DefaultK for those rules and 1 for the others, which take a SAM step
	// every step and reject K > 1.
	K int
	// Alpha scales the reused component g_v on LookSAM reuse steps (alpha in LookSAM, Eq. 5). Must be >= 0.
	Alpha float64
	// PerTensor takes every norm, cos(theta) and the projection per parameter tensor. The default
	// takes them over the whole parameter vector, as the LookSAM paper defines them.
	PerTensor bool
	// NormEpsilon is added to every norm that divides (default 1e-12). A division by a norm that is
	// exactly zero yields zero, whatever the epsilon and the dtype.
	NormEpsilon float64
	// ProjectionTolerance zeroes g_v when |g_v| <= ProjectionTolerance * |g_s|: a g_s parallel to g
	// leaves only rounding error in g_v, which the reuse step would otherwise rescale to the size of
	// |g|. The default is 1e-5, raised to one machine epsilon for float16 (2^-10) and bfloat16 (2^-7).
	ProjectionTolerance float64
	// LayerRatioMax, when > 0, caps LayerSAM's ratio |w_i| / |g_i|, which grows without bound as
	// |g_i| shrinks near a minimum. 0, the default, leaves it uncapped as in the LookSAM paper.
	LayerRatioMax float64
	// ASAMEta is eta in ASAM's T = |w| + eta (default 0.01, as in Kwon et al.).
	ASAMEta float64

	// Momentum is SGD's momentum coefficient mu; 0 is plain SGD.
	Momentum float64
	// Nesterov selects Nesterov momentum for SGD.
	Nesterov bool
	// Beta1 and Beta2 are the Adam/LAMB moment decay rates (defaults 0.9 and 0.999).
	Beta1, Beta2 float64
	// AdamEpsilon is added to sqrt(v_hat) (default 1e-8 for AdamW, 1e-6 for LAMB).
	AdamEpsilon float64
	// WeightDecay is the decoupled weight decay coefficient lambda (AdamW and LAMB) or the L2
	// coefficient added to the gradient (SGD). Must be >= 0.
	WeightDecay float64
	// NoDecay lists variable names excluded from weight decay and from LAMB's trust ratio. nil takes
	// DefaultNoDecay; an empty non-nil slice excludes nothing.
	NoDecay []string
	// ClipNorm, when > 0, rescales the gradient that reaches the base optimizer so that its global
	// norm is at most ClipNorm. It is applied once per step, after any averaging across devices.
	ClipNorm float64
}

// DefaultK is the period of SAM steps for the k-rules when K is 0; the LookSAM paper's main
// results use k = 5.
const DefaultK = 5

// withDefaults returns c with the defaults filled in.
func (c Config) withDefaults() Config {
	if c.Rule == "" {
		c.Rule = RuleNone
	}
	if c.Base == "" {
		c.Base = BaseAdamW
	}
	if c.K == 0 {
		c.K = 1
		if spec, ok := ruleSpecs[c.Rule]; ok && spec.between != betweenNone {
			c.K = DefaultK
		}
	}
	if c.NormEpsilon == 0 {
		c.NormEpsilon = 1e-12
	}
	if c.ProjectionTolerance == 0 {
		c.ProjectionTolerance = 1e-5
	}
	if c.ASAMEta == 0 {
		c.ASAMEta = 0.01
	}
	if c.Beta1 == 0 {
		c.Beta1 = 0.9
	}
	if c.Beta2 == 0 {
		c.Beta2 = 0.999
	}
	if c.AdamEpsilon == 0 {
		c.AdamEpsilon = 1e-8
		if c.Base == BaseLAMB {
			c.AdamEpsilon = 1e-6
		}
	}
	if c.NoDecay == nil {
		c.NoDecay = DefaultNoDecay
	}
	return c
}

// validate returns an error naming the first invalid value of a config with defaults filled in.
func (c Config) validate() error {
	spec, ok := ruleSpecs[c.Rule]
	if !ok {
		names := make([]string, len(Rules))
		for i, r := range Rules {
			names[i] = string(r)
		}
		return fmt.Errorf("looksam: unknown rule %q: use one of %s", c.Rule, strings.Join(names, ", "))
	}
	switch c.Base {
	case BaseSGD, BaseAdamW, BaseLAMB:
	default:
		return fmt.Errorf("looksam: unknown base optimizer %q: use sgd, adamw or lamb", c.Base)
	}
	checks := []struct {
		name  string
		value float64
		ok    bool
		want  string
	}{
		{"rho", c.Rho, c.Rho >= 0, ">= 0"},
		{"alpha", c.Alpha, c.Alpha >= 0, ">= 0"},
		{"norm epsilon", c.NormEpsilon, c.NormEpsilon >= 0, ">= 0"},
		{"projection tolerance", c.ProjectionTolerance, c.ProjectionTolerance >= 0 && c.ProjectionTolerance < 1, "in [0, 1)"},
		{"ASAM eta", c.ASAMEta, c.ASAMEta >= 0, ">= 0"},
		{"layer ratio max", c.LayerRatioMax, c.LayerRatioMax >= 0, ">= 0 (0 disables the cap)"},
		{"momentum", c.Momentum, c.Momentum >= 0 && c.Momentum < 1, "in [0, 1)"},
		{"beta1", c.Beta1, c.Beta1 >= 0 && c.Beta1 < 1, "in [0, 1)"},
		{"beta2", c.Beta2, c.Beta2 >= 0 && c.Beta2 < 1, "in [0, 1)"},
		{"Adam epsilon", c.AdamEpsilon, c.AdamEpsilon > 0, "> 0"},
		{"weight decay", c.WeightDecay, c.WeightDecay >= 0, ">= 0"},
		{"clip norm", c.ClipNorm, c.ClipNorm >= 0, ">= 0 (0 disables clipping)"},
	}
	for _, check := range checks {
		if !check.ok || math.IsNaN(check.value) || math.IsInf(check.value, 0) {
			return fmt.Errorf("looksam: invalid %s=%g: it must be finite and %s", check.name, check.value, check.want)
		}
	}
	if c.K < 1 {
		return fmt.Errorf("looksam: invalid k=%d: it must be >= 1", c.K)
	}
	if spec.between == betweenNone && c.K > 1 {
		return fmt.Errorf("looksam: invalid k=%d for rule %q, which takes a SAM step every step: use k=1, or rule sam-k or looksam", c.K, c.Rule)
	}
	return nil
}

// StepKind is the kind of a training step; each kind is its own compiled program.
type StepKind string

const (
	// KindPlain takes one gradient and hands it to the base optimizer.
	KindPlain StepKind = "plain"
	// KindSAM takes the gradient at w and at w + eps, and hands g_s to the base optimizer.
	KindSAM StepKind = "sam"
	// KindReuse takes one gradient and adds the stored g_v component before the base optimizer.
	KindReuse StepKind = "reuse"
)

// Gradients returns the number of forward and backward passes that a step of this kind evaluates.
func (k StepKind) Gradients() int {
	if k == KindSAM {
		return 2
	}
	return 1
}
