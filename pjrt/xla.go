//go:build cgo && !noxla

package pjrt

import (
	"fmt"
	"slices"
	"strings"

	xlapjrt "github.com/gomlx/go-xla/pkg/pjrt"
	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/backends/xla"
)

// XLACompiledIn is false in builds with the noxla tag or with cgo disabled (CGO_ENABLED=0), which
// leave out GoMLX's XLA backend and go-xla's cgo code.
const XLACompiledIn = true

func init() {
	// GoMLX v0.26.0 downloads plugins from GitHub whenever its XLA backend gets a plugin name rather
	// than an absolute path, unless GOMLX_NO_AUTO_INSTALL was set when the package initialised.
	// Select always passes absolute paths; this also covers other callers in the process.
	xla.EnableAutoInstall(false)
}

// PJRT C API version of the pjrt_c_api.h header in github.com/gomlx/go-xla v0.1.4.
const (
	bindingAPIMajor = 0
	bindingAPIMinor = 83
)

// oldestTriedAPIMinor is the oldest PJRT C API minor version known to work with go-xla v0.1.4:
// the xla-cpu-pjrt 0.0.1 wheel implements 0.81 and passes this package's XLA tests. Versions 0.82
// and 0.83 only added PJRT_Client_CreateErrorBuffer and
// PJRT_AsyncHostToDeviceTransferManager_TransferLiteral, which go-xla v0.1.4 never calls.
const oldestTriedAPIMinor = 81

// newXLABackend loads plugin through go-xla, creates GoMLX's XLA backend on it and fills choice.
// The error names the plugin path.
func newXLABackend(plugin Plugin, pluginOptions []string, cpuDeviceCount int, choice *Choice) (backends.Backend, error) {
	// Load the library first, so that a NULL API table or an incompatible major version gives an
	// error here. GoMLX would pass a nil plugin on and crash: go-xla v0.1.4 returns no error when
	// GetPjrtApi returns NULL. go-xla caches the plugin by path, so GoMLX reuses this load.
	loaded, err := xlapjrt.GetPlugin(plugin.Path)
	if err != nil {
		return nil, fmt.Errorf("loading PJRT plugin %s failed: %w", plugin.Path, err)
	}
	if loaded == nil {
		return nil, fmt.Errorf("PJRT plugin %s returned no API table from %s, so it cannot be used", plugin.Path, pjrtEntryPoint)
	}
	major, minor := loaded.Version()
	if major != bindingAPIMajor {
		return nil, fmt.Errorf("PJRT plugin %s implements PJRT C API %d.%d, but go-xla speaks %d.%d; install a plugin with major version %d",
			plugin.Path, major, minor, bindingAPIMajor, bindingAPIMinor, bindingAPIMajor)
	}
	choice.Plugin = &plugin
	choice.PluginAPIVersion = fmt.Sprintf("%d.%d", major, minor)
	if minor < oldestTriedAPIMinor {
		choice.Notes = append(choice.Notes, fmt.Sprintf(
			"PJRT C API %d.%d is older than the %d.%d that go-xla is built against and than any version tried with it; a call to a function the plugin lacks would crash",
			major, minor, bindingAPIMajor, bindingAPIMinor))
	}

	// CPU plugins share host memory with GoMLX tensors, as GoMLX assumes for its "cpu" plugin.
	options := slices.Clone(pluginOptions)
	if plugin.Platform == PlatformCPU && !slices.Contains(options, "shared_buffers") && !slices.Contains(options, "noshared_buffers") {
		options = append(options, "shared_buffers")
	}
	config := strings.Join(append([]string{plugin.Path}, options...), ",")

	// The CPU plugins read the device count only from the cpu_device_count client option.
	var clientOptions xlapjrt.NamedValuesMap
	if plugin.Platform == PlatformCPU && cpuDeviceCount > 0 {
		clientOptions = xlapjrt.NamedValuesMap{"cpu_device_count": int64(cpuDeviceCount)}
	}

	backend, err := xla.NewWithOptions(config, clientOptions)
	if err != nil {
		return nil, fmt.Errorf("creating the XLA backend on PJRT plugin %s failed: %w", plugin.Path, err)
	}
	choice.Backend = xla.BackendName
	choice.Config = xla.BackendName + ":" + config
	describeBackend(backend, choice)
	if plugin.Platform == PlatformCPU && cpuDeviceCount > 0 && len(choice.Devices) != cpuDeviceCount {
		choice.Notes = append(choice.Notes, fmt.Sprintf("requested %d CPU devices, but the plugin created %d",
			cpuDeviceCount, len(choice.Devices)))
	}
	return backend, nil
}
