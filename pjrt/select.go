package pjrt

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/backends/simplego"
	"github.com/looksam/vitsam/graphx/dotgrad"
)

// GoBackendConfig is the configuration of the pure-Go backend that Select creates for "go" and
// for "auto" when no PJRT plugin is usable. Its format is GOMLX_BACKEND's: "go:" followed by the
// comma-separated options of github.com/gomlx/gomlx/backends/simplego.
//
// It is dotgrad.RecommendedGoBackendConfig: with the DotGeneral-based gradients of graphx/dotgrad,
// GoMLX v0.26.0's pure-Go backend deadlocks at its default parallelism, and that constant's doc
// gives the reason and the measurements behind the choice. Programs may assign another value
// before calling Select.
var GoBackendConfig = dotgrad.RecommendedGoBackendConfig

// AutoConfig is the configuration that lets Select choose the backend; "" means the same.
const AutoConfig = "auto"

// ValidConfigs lists the configuration forms that Select accepts, for help texts and errors.
var ValidConfigs = []string{
	AutoConfig, "go", "go:OPTIONS", "xla", "xla:NAME", "xla:/path/to/plugin.so", "xla:NAME,OPTIONS",
	PlatformCPU, PlatformCUDA, PlatformTPU,
}

// xlaAliases are the names under which GoMLX v0.26.0 registers its XLA backend.
var xlaAliases = []string{"xla", "stablehlo", "hlo", "shlo"}

// Options configures SelectWith. The zero value is what Select uses.
type Options struct {
	// Search configures plugin discovery. Its Plugin field is replaced by the plugin that the
	// configuration names, and its LookupEnv also reads GOMLX_BACKEND and XLA_FLAGS.
	Search SearchOptions

	// CPUDeviceCount is the number of devices that a CPU plugin creates. Zero takes N from
	// --xla_force_host_platform_device_count=N in XLA_FLAGS, and the plugin's default applies when
	// that is absent too (4 for the xla-cpu-pjrt 0.0.1 and fastatomstruct-xla-cpu 2026.6.23 wheels).
	// The CPU plugins ignore XLA_FLAGS for this and read only the client option that Select sets.
	CPUDeviceCount int
}

// Choice describes the backend that Select created, for printing at program start.
type Choice struct {
	// Requested is the configuration passed to Select.
	Requested string

	// Resolved is the configuration Select acted on: Requested, or GOMLX_BACKEND when Requested
	// is "" or "auto" and GOMLX_BACKEND is set, or "auto".
	Resolved string

	// Backend is "go" or "xla".
	Backend string

	// Config is the configuration of the created backend in GOMLX_BACKEND's format, such as
	// "go:parallelism=-1" or "xla:/abs/path/plugin.so,shared_buffers".
	Config string

	// Reason is the cause of this choice, such as `GOMLX_BACKEND="go"` or
	// "auto: no usable PJRT plugin was found".
	Reason string

	// Plugin is the PJRT plugin loaded; nil for the pure-Go backend.
	Plugin *Plugin

	// PluginAPIVersion is the PJRT C API version that the loaded plugin reports, such as "0.81".
	PluginAPIVersion string

	// Description is the backend's own Description().
	Description string

	// Devices holds the DeviceDescription of each device, in device order.
	Devices []string

	// Notes lists facts worth printing: a fallback to the pure-Go backend and its cause, or a
	// device count that differs from the one requested.
	Notes []string

	// Discovery is the plugin search result; nil when the configuration needed no search.
	Discovery *Discovery
}

// String describes the choice in a few lines: backend, configuration, reason, plugin, device
// count and the first device, then the notes.
func (c *Choice) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "backend %s (%s): %s\n", c.Backend, c.Config, c.Reason)
	if p := c.Plugin; p != nil {
		fmt.Fprintf(&b, "  plugin: %s, %s, %d MB, PJRT C API %s, from %s\n",
			p.Platform, p.Path, p.Size>>20, c.PluginAPIVersion, p.Source)
	}
	fmt.Fprintf(&b, "  devices: %d", len(c.Devices))
	if len(c.Devices) > 0 {
		fmt.Fprintf(&b, " (device 0: %s)", c.Devices[0])
	}
	b.WriteString("\n")
	for _, note := range c.Notes {
		fmt.Fprintf(&b, "  note: %s\n", note)
	}
	return b.String()
}

// Select creates the backend that config names and returns it with a Choice that describes it.
// It is SelectWith with the zero Options.
func Select(config string) (backends.Backend, *Choice, error) {
	return SelectWith(config, Options{})
}

// SelectWith creates the backend that config names and returns it with a Choice that describes it.
//
// Config takes these forms:
//   - "" or "auto": GOMLX_BACKEND when it is set. Otherwise XLA runs on the best plugin that
//     FindPlugins finds (TPU, then CUDA, then CPU). When no plugin is found or it fails to load,
//     the pure-Go backend with GoBackendConfig is used, and Choice.Notes records a failed load.
//   - "go" uses GoBackendConfig, and "go:OPTIONS" passes OPTIONS to the pure-Go backend verbatim.
//   - "xla" uses the best plugin found, and "xla:NAME" the first plugin with that name or platform.
//   - "xla:/path/to/plugin.so" uses that file. A relative path is made absolute.
//   - Options after a comma go to GoMLX's XLA backend, as in "xla:cuda,tf32". GoMLX v0.26.0
//     accepts shared_buffers, noshared_buffers and tf32.
//   - "cpu", "cuda" and "tpu" are short for "xla:cpu", "xla:cuda" and "xla:tpu".
//
// An explicit XLA request never falls back: a missing or broken plugin is an error naming the
// places searched or the file and reason. SelectWith never downloads anything: it hands GoMLX an
// absolute plugin path and turns off GoMLX's auto-install. CPU plugins get shared_buffers unless
// noshared_buffers is given, as GoMLX does for its own "cpu" plugin.
func SelectWith(config string, opts Options) (backends.Backend, *Choice, error) {
	lookupEnv := opts.Search.LookupEnv
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	choice := &Choice{Requested: config}

	resolved := strings.TrimSpace(config)
	fromEnv := false
	if resolved == "" || resolved == AutoConfig {
		resolved = AutoConfig
		if env, ok := lookupEnv(backends.ConfigEnvVar); ok && strings.TrimSpace(env) != "" && strings.TrimSpace(env) != AutoConfig {
			resolved = strings.TrimSpace(env)
			fromEnv = true
		}
	}
	choice.Resolved = resolved
	explicitReason := fmt.Sprintf("requested %q", resolved)
	if fromEnv {
		explicitReason = fmt.Sprintf("%s=%q", backends.ConfigEnvVar, resolved)
	}

	request, err := parseConfig(resolved)
	if err != nil {
		if fromEnv {
			err = fmt.Errorf("$%s: %w", backends.ConfigEnvVar, err)
		}
		return nil, choice, err
	}

	cpuDeviceCount := opts.CPUDeviceCount
	if cpuDeviceCount == 0 {
		flags, _ := lookupEnv("XLA_FLAGS")
		cpuDeviceCount = forcedHostDeviceCount(flags)
	}

	switch {
	case request.goConfig != "":
		choice.Reason = explicitReason
		backend, err := newGoBackend(request.goConfig, choice)
		return backend, choice, err

	case request.auto && !XLACompiledIn:
		choice.Reason = "auto: the XLA backend is not compiled in (noxla tag or CGO_ENABLED=0)"
		backend, err := newGoBackend(GoBackendConfig, choice)
		return backend, choice, err

	case request.auto:
		search := opts.Search
		search.Plugin = ""
		discovery, err := FindPlugins(search)
		choice.Discovery = discovery
		if err != nil {
			choice.Reason = "auto: no usable PJRT plugin was found"
			choice.Notes = append(choice.Notes, "`make xla-cpu` installs a CPU PJRT plugin for the XLA backend")
			backend, err := newGoBackend(GoBackendConfig, choice)
			return backend, choice, err
		}
		plugin, _ := discovery.Best()
		backend, err := newXLABackend(plugin, nil, cpuDeviceCount, choice)
		if err != nil {
			// Replace what the failed attempt recorded with the cause of the fallback.
			choice.Reason = "auto: the PJRT plugin found failed to load"
			choice.Notes = []string{err.Error()}
			choice.Plugin, choice.PluginAPIVersion = nil, ""
			backend, err := newGoBackend(GoBackendConfig, choice)
			return backend, choice, err
		}
		choice.Reason = "auto: a " + plugin.Platform + " PJRT plugin was found"
		return backend, choice, nil

	default:
		search := opts.Search
		search.Plugin = request.plugin
		discovery, err := FindPlugins(search)
		choice.Discovery = discovery
		if err != nil {
			return nil, choice, fmt.Errorf("backend %q: %w", resolved, err)
		}
		plugin, _ := discovery.Best()
		backend, err := newXLABackend(plugin, request.pluginOptions, cpuDeviceCount, choice)
		if err != nil && plugin.MissingHardware != "" {
			return nil, choice, fmt.Errorf("backend %q: %w (%s)", resolved, err, plugin.MissingHardware)
		}
		if err != nil {
			return nil, choice, fmt.Errorf("backend %q: %w", resolved, err)
		}
		choice.Reason = explicitReason
		return backend, choice, nil
	}
}

// backendRequest is a parsed configuration.
type backendRequest struct {
	// auto is set for "auto".
	auto bool

	// goConfig is the full pure-Go configuration ("go:OPTIONS"), or "" for XLA.
	goConfig string

	// plugin is the plugin name or absolute path for XLA; "" accepts any plugin.
	plugin string

	// pluginOptions are the options after the plugin name, for GoMLX's XLA backend.
	pluginOptions []string
}

// parseConfig splits a configuration in GOMLX_BACKEND's format into a backendRequest.
func parseConfig(config string) (backendRequest, error) {
	if config == AutoConfig {
		return backendRequest{auto: true}, nil
	}

	name, rest, hasColon := strings.Cut(config, ":")
	switch {
	case name == simplego.BackendName:
		if !hasColon || rest == "" {
			return backendRequest{goConfig: GoBackendConfig}, nil
		}
		return backendRequest{goConfig: config}, nil

	case slices.Contains(xlaAliases, name):
		parts := strings.Split(rest, ",")
		request := backendRequest{plugin: strings.TrimSpace(parts[0])}
		for _, option := range parts[1:] {
			if option = strings.TrimSpace(option); option != "" {
				request.pluginOptions = append(request.pluginOptions, option)
			}
		}
		if isPathRequest(request.plugin) && !filepath.IsAbs(request.plugin) {
			absolute, err := filepath.Abs(request.plugin)
			if err != nil {
				return backendRequest{}, fmt.Errorf("plugin path %q cannot be made absolute: %w", request.plugin, err)
			}
			request.plugin = absolute
		}
		return request, nil

	case !hasColon && slices.Contains([]string{PlatformCPU, PlatformCUDA, PlatformTPU}, name):
		return backendRequest{plugin: name}, nil
	}
	return backendRequest{}, fmt.Errorf("unknown backend %q: valid values are %s", config, strings.Join(ValidConfigs, ", "))
}

// forcedHostDeviceCountFlag matches the XLA flag that sets the number of simulated CPU devices.
var forcedHostDeviceCountFlag = regexp.MustCompile(`(?:^|\s)--?xla_force_host_platform_device_count=(\d+)(?:\s|$)`)

// forcedHostDeviceCount returns N from --xla_force_host_platform_device_count=N in an XLA_FLAGS
// value, or 0 when the flag is absent.
func forcedHostDeviceCount(xlaFlags string) int {
	groups := forcedHostDeviceCountFlag.FindStringSubmatch(xlaFlags)
	if groups == nil {
		return 0
	}
	count, err := strconv.Atoi(groups[1])
	if err != nil {
		return 0
	}
	return count
}

// newGoBackend creates the pure-Go backend from a "go:OPTIONS" configuration and fills choice.
func newGoBackend(config string, choice *Choice) (backends.Backend, error) {
	_, options, _ := strings.Cut(config, ":")
	backend, err := simplego.New(options)
	if err != nil {
		return nil, fmt.Errorf("pure-Go backend %q: %w", config, err)
	}
	choice.Backend = simplego.BackendName
	choice.Config = config
	describeBackend(backend, choice)
	return backend, nil
}

// describeBackend copies the backend's description and device descriptions into choice.
func describeBackend(backend backends.Backend, choice *Choice) {
	choice.Description = backend.Description()
	choice.Devices = make([]string, backend.NumDevices())
	for i := range choice.Devices {
		choice.Devices[i] = backend.DeviceDescription(backends.DeviceNum(i))
	}
}
