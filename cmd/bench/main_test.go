package main

import (
	"bytes"
	"testing"

	"github.com/looksam/vitsam/optimizers/looksam"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseConfigs(t *testing.T) {
	got, err := parseConfigs("adamw, sam,looksam:5,sam-k:10")
	require.NoError(t, err)
	assert.Equal(t, []benchConfig{
		{Name: "adamw", Rule: looksam.RuleNone},
		{Name: "sam", Rule: looksam.RuleSAM},
		{Name: "looksam:5", Rule: looksam.RuleLookSAM, K: 5},
		{Name: "sam-k:10", Rule: looksam.RuleSAMK, K: 10},
	}, got)
}

func TestParseConfigsErrors(t *testing.T) {
	cases := []struct{ list, want string }{
		{"", "no configuration"},
		{"looksam:0", `invalid k "0"`},
		{"looksam:x", `invalid k "x"`},
		{"lookSAM", `unknown rule "lookSAM"`},
		{"sam:5", "k=5"},
	}
	for _, c := range cases {
		_, err := parseConfigs(c.list)
		require.Error(t, err, c.list)
		assert.Contains(t, err.Error(), c.want, c.list)
	}
}

func TestSummariseMedian(t *testing.T) {
	assert.Equal(t, Stats{Count: 3, Median: 2, Min: 1, Max: 5}, summarise([]float64{5, 1, 2}))
	assert.Equal(t, Stats{Count: 4, Median: 2.5, Min: 1, Max: 5}, summarise([]float64{5, 1, 2, 3}))
	assert.Equal(t, Stats{}, summarise(nil))
}

func TestRunRejectsBadFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"-batch", "0"}, "invalid -batch 0"},
		{[]string{"-rounds", "0"}, "invalid -rounds 0"},
		{[]string{"-model", "huge"}, `unknown model preset "huge"`},
		{[]string{"-accuracy-plot", "x.png"}, "go together"},
	}
	for _, c := range cases {
		var out, errOut bytes.Buffer
		err := run(c.args, &out, &errOut)
		require.Error(t, err, "%v", c.args)
		assert.Contains(t, err.Error(), c.want, "%v", c.args)
	}
}
