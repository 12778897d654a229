package pjrt

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/backends/simplego"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// emptyOptions returns Options whose search covers only an empty temporary tree and reads only the
// given environment variables.
func emptyOptions(t *testing.T, env map[string]string) Options {
	root := t.TempDir()
	return Options{Search: SearchOptions{
		LookupEnv:      envMap(env),
		HomeDir:        filepath.Join(root, "home"),
		ModuleRoot:     filepath.Join(root, "module"),
		SkipSystemDirs: true,
	}}
}

func TestSelectGo(t *testing.T) {
	tests := []struct {
		config     string
		wantConfig string
	}{
		{"go", GoBackendConfig},
		{"go:", GoBackendConfig},
		{" go ", GoBackendConfig},
		{"go:ops_sequential", "go:ops_sequential"},
	}
	for _, tt := range tests {
		t.Run(tt.config, func(t *testing.T) {
			backend, choice, err := SelectWith(tt.config, emptyOptions(t, nil))
			require.NoError(t, err)
			defer backend.Finalize()
			_, isGo := backend.(*simplego.Backend)
			assert.True(t, isGo, "got backend %T, want *simplego.Backend", backend)
			assert.Equal(t, simplego.BackendName, choice.Backend)
			assert.Equal(t, tt.wantConfig, choice.Config)
			assert.Equal(t, []string{"device#0"}, choice.Devices)
			assert.Nil(t, choice.Plugin)
			assert.Nil(t, choice.Discovery, "an explicit go request should not search for plugins")
		})
	}
}

func TestSelectGoInvalidOption(t *testing.T) {
	_, _, err := SelectWith("go:parallelism=many", emptyOptions(t, nil))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "go:parallelism=many")
}

func TestSelectUnknownBackend(t *testing.T) {
	tests := []struct {
		name, config string
		env          map[string]string
		wantText     []string
	}{
		{"argument", "bogus", nil, []string{`unknown backend "bogus"`, "valid values are auto, go,", "xla:/path/to/plugin.so", "tpu"}},
		{"unknown platform shorthand", "rocm", nil, []string{`unknown backend "rocm"`}},
		{"GOMLX_BACKEND", "", map[string]string{backends.ConfigEnvVar: "bogus:x"}, []string{"$GOMLX_BACKEND", `unknown backend "bogus:x"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			backend, _, err := SelectWith(tt.config, emptyOptions(t, tt.env))
			require.Error(t, err)
			assert.Nil(t, backend)
			for _, want := range tt.wantText {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

func TestSelectReadsGOMLXBackend(t *testing.T) {
	for _, config := range []string{"", AutoConfig} {
		backend, choice, err := SelectWith(config, emptyOptions(t, map[string]string{backends.ConfigEnvVar: "go:ops_sequential"}))
		require.NoError(t, err)
		backend.Finalize()
		assert.Equal(t, "go:ops_sequential", choice.Config)
		assert.Equal(t, "go:ops_sequential", choice.Resolved)
		assert.Equal(t, `GOMLX_BACKEND="go:ops_sequential"`, choice.Reason)
	}
}

func TestSelectAutoWithoutPluginUsesGo(t *testing.T) {
	backend, choice, err := SelectWith("", emptyOptions(t, map[string]string{backends.ConfigEnvVar: AutoConfig}))
	require.NoError(t, err)
	defer backend.Finalize()
	assert.Equal(t, simplego.BackendName, choice.Backend)
	assert.Equal(t, GoBackendConfig, choice.Config)
	if !XLACompiledIn {
		assert.Equal(t, "auto: the XLA backend is not compiled in (noxla tag or CGO_ENABLED=0)", choice.Reason)
		return
	}
	assert.Equal(t, "auto: no usable PJRT plugin was found", choice.Reason)
	require.NotNil(t, choice.Discovery)
	assert.NotEmpty(t, choice.Discovery.Tried)
	assert.Contains(t, choice.String(), "backend go ("+GoBackendConfig+")")
}

func TestSelectExplicitXLAWithoutPlugin(t *testing.T) {
	for _, config := range []string{"xla", "xla:cpu", "cpu", "tpu", "cuda"} {
		t.Run(config, func(t *testing.T) {
			backend, _, err := SelectWith(config, emptyOptions(t, nil))
			require.Error(t, err)
			assert.Nil(t, backend)
			assert.Contains(t, err.Error(), "make xla-cpu")
			assert.Contains(t, err.Error(), ".local/lib/go-xla")
		})
	}
}

func TestSelectRejectsFileBeforeLoading(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "pjrt_c_api_cpu_plugin.so")
	writeFile(t, garbage, []byte("\x7fELF but not really"))

	backend, _, err := SelectWith("xla:"+garbage, emptyOptions(t, nil))
	require.Error(t, err)
	assert.Nil(t, backend)
	assert.Contains(t, err.Error(), garbage)
	assert.Contains(t, err.Error(), "not an ELF shared library")
}

func TestSelectStubPlugin(t *testing.T) {
	if !XLACompiledIn {
		t.Skip("skipping: the XLA backend is not compiled in (noxla tag or CGO_ENABLED=0)")
	}
	fakeHardware(t)
	options := emptyOptions(t, nil)
	stub := filepath.Join(options.Search.HomeDir, ".local/lib/go-xla/pjrt_c_api_cpu_plugin.so")
	buildStub(t, stub, stubNullAPI)

	// An explicit request reports the failed load with the path.
	backend, _, err := SelectWith("xla:"+stub, options)
	require.Error(t, err)
	assert.Nil(t, backend)
	assert.Contains(t, err.Error(), stub)
	assert.Contains(t, err.Error(), "returned no API table")

	// "auto" falls back to the pure-Go backend and records the cause.
	backend, choice, err := SelectWith(AutoConfig, options)
	require.NoError(t, err)
	defer backend.Finalize()
	assert.Equal(t, simplego.BackendName, choice.Backend)
	assert.Equal(t, "auto: the PJRT plugin found failed to load", choice.Reason)
	require.Len(t, choice.Notes, 1)
	assert.Contains(t, choice.Notes[0], stub)
	assert.Nil(t, choice.Plugin)
}

func TestParseConfig(t *testing.T) {
	workingDir, err := filepath.Abs(".")
	require.NoError(t, err)
	tests := []struct {
		config string
		want   backendRequest
	}{
		{"auto", backendRequest{auto: true}},
		{"go", backendRequest{goConfig: GoBackendConfig}},
		{"go:parallelism=2", backendRequest{goConfig: "go:parallelism=2"}},
		{"xla", backendRequest{}},
		{"xla:", backendRequest{}},
		{"xla:cpu", backendRequest{plugin: "cpu"}},
		{"stablehlo:cuda", backendRequest{plugin: "cuda"}},
		{"xla:cuda,tf32,", backendRequest{plugin: "cuda", pluginOptions: []string{"tf32"}}},
		{"xla:/opt/p.so,noshared_buffers", backendRequest{plugin: "/opt/p.so", pluginOptions: []string{"noshared_buffers"}}},
		{"xla:plugins/p.so", backendRequest{plugin: filepath.Join(workingDir, "plugins/p.so")}},
		{"tpu", backendRequest{plugin: "tpu"}},
	}
	for _, tt := range tests {
		got, err := parseConfig(tt.config)
		require.NoError(t, err, "parseConfig(%q)", tt.config)
		assert.Equal(t, tt.want, got, "parseConfig(%q)", tt.config)
	}
}

func TestForcedHostDeviceCount(t *testing.T) {
	tests := []struct {
		flags string
		want  int
	}{
		{"", 0},
		{"--xla_force_host_platform_device_count=4", 4},
		{"--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=8 --xla_cpu_use_thunk_runtime=false", 8},
		{"--xla_force_host_platform_device_count=x", 0},
		{"--not_xla_force_host_platform_device_count=3", 0},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, forcedHostDeviceCount(tt.flags), "forcedHostDeviceCount(%q)", tt.flags)
	}
}

func TestListDevicesGo(t *testing.T) {
	backend, err := simplego.New("")
	require.NoError(t, err)
	defer backend.Finalize()
	var out bytes.Buffer
	require.NoError(t, ListDevices(&out, backend))
	assert.Equal(t, "backend SimpleGo (go): Simple Go Portable Backend\ndevice 0: device#0\n", out.String())
}
