package train

import (
	"reflect"
	"strings"
	"testing"

	"github.com/looksam/vitsam/models/vit"
	"github.com/looksam/vitsam/optimizers/looksam"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPresetsAreValid(t *testing.T) {
	require.Len(t, Presets, 9)
	fields := reflect.TypeOf(Preset{})
	for _, name := range PresetNames() {
		p, err := LookupPreset(name)
		require.NoError(t, err)
		assert.Equal(t, name, p.Name)
		_, err = vit.Preset(p.Model)
		assert.NoError(t, err, "%s: model", name)
		_, err = looksam.New(looksam.Config{Rule: p.Rule, Base: p.Base, K: p.K, Rho: 0.05,
			WeightDecay: p.WeightDecay, ClipNorm: p.ClipNorm})
		assert.NoError(t, err, "%s: optimizer", name)
		assert.Positive(t, p.BatchSize, "%s: batch size", name)
		for _, field := range p.Unverified {
			_, ok := fields.FieldByName(field)
			assert.True(t, ok, "%s: Unverified names %q, which is not a Preset field", name, field)
		}

		switch {
		case strings.HasPrefix(name, "table10-"):
			assert.Contains(t, p.Table, "Table 10")
			assert.Equal(t, looksam.BaseAdamW, p.Base, name)
			assert.Equal(t, 4096, p.BatchSize, name)
		case strings.HasPrefix(name, "table11-"):
			assert.Contains(t, p.Table, "Table 11")
			assert.Equal(t, looksam.RuleLookLayerSAM, p.Rule, name)
			assert.Equal(t, looksam.BaseLAMB, p.Base, name)
		default:
			t.Errorf("preset %q cites neither table", name)
		}
	}
	assert.Equal(t, 65536, Presets["table11-64k"].BatchSize)

	_, err := LookupPreset("table12")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "table10-b16")
}
