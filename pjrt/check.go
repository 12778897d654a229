package pjrt

import (
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// pjrtEntryPoint is the symbol every PJRT plugin exports; it returns the plugin's PJRT_Api table.
const pjrtEntryPoint = "GetPjrtApi"

// elfMachines maps GOARCH values to the ELF machine a plugin for that architecture is built for.
var elfMachines = map[string]elf.Machine{
	"amd64": elf.EM_X86_64,
	"arm64": elf.EM_AARCH64,
}

// CheckPlugin returns an error unless path is a regular file holding an ELF shared library for this
// machine's architecture that exports GetPjrtApi.
//
// It reads only the ELF headers and the dynamic symbol table with debug/elf, without loading the
// library, so a corrupt or foreign file gets an error here instead of reaching dlopen. A file that
// passes can still fail to load, for example when a library it depends on is missing, and Select
// reports that error with the path. The error names the path and the reason.
func CheckPlugin(path string) error {
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("PJRT plugin %s not found: no such file", path)
	}
	if err != nil {
		return fmt.Errorf("PJRT plugin %s cannot be read: %w", path, err)
	}
	if info.IsDir() {
		return fmt.Errorf("PJRT plugin %s is a directory, not a shared library file", path)
	}
	if info.Size() == 0 {
		return fmt.Errorf("PJRT plugin %s is an empty file; reinstall the plugin (`make xla-cpu` installs a CPU one)", path)
	}

	file, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("PJRT plugin %s is not an ELF shared library: %w", path, err)
	}
	defer func() { _ = file.Close() }()

	if file.Type != elf.ET_DYN {
		return fmt.Errorf("PJRT plugin %s is an ELF file of type %s, not a shared library (%s)", path, file.Type, elf.ET_DYN)
	}
	if want, known := elfMachines[runtime.GOARCH]; known && file.Machine != want {
		return fmt.Errorf("PJRT plugin %s is built for %s, but this program runs on %s (%s)",
			path, file.Machine, runtime.GOARCH, want)
	}

	symbols, err := file.DynamicSymbols()
	if err != nil {
		return fmt.Errorf("PJRT plugin %s has no readable dynamic symbol table, so it cannot export %s: %w",
			path, pjrtEntryPoint, err)
	}
	for _, symbol := range symbols {
		if symbol.Name == pjrtEntryPoint && symbol.Section != elf.SHN_UNDEF && elf.ST_TYPE(symbol.Info) == elf.STT_FUNC {
			return nil
		}
	}
	return fmt.Errorf("PJRT plugin %s does not export the function %s, so it is not a PJRT plugin", path, pjrtEntryPoint)
}

// Platform names of the plugins that this package recognises.
const (
	PlatformCPU  = "cpu"
	PlatformCUDA = "cuda"
	PlatformTPU  = "tpu"
)

// platformOfName returns the platform whose name a plugin name contains, so that go-xla's versioned
// pjrt_c_api_cpu_v0.83.3_plugin.so (name "cpu_v0.83.3"), JAX's "cuda12" and a file named
// libpjrt_cpu.so all map to their platform. Names that contain none are returned unchanged.
func platformOfName(name string) string {
	lower := strings.ToLower(name)
	for _, platform := range []string{PlatformCPU, PlatformCUDA, PlatformTPU} {
		if strings.Contains(lower, platform) {
			return platform
		}
	}
	return name
}

// detectHardware returns "" when the devices that a plugin for platform drives are present, and
// otherwise what is missing. CPU plugins and unknown platforms always pass. Tests replace it.
var detectHardware = detectHardwareOnHost

func detectHardwareOnHost(platform string) string {
	switch platform {
	case PlatformCUDA:
		for _, path := range []string{"/dev/nvidiactl", "/proc/driver/nvidia/version"} {
			if _, err := os.Stat(path); err == nil {
				return ""
			}
		}
		return "no NVIDIA GPU found (/dev/nvidiactl and /proc/driver/nvidia/version are missing)"
	case PlatformTPU:
		// TPU v2 to v4 VMs expose /dev/accel*, v5e and later expose VFIO groups as /dev/vfio/<n>.
		for _, pattern := range []string{"/dev/accel*", "/dev/vfio/[0-9]*"} {
			if matches, _ := filepath.Glob(pattern); len(matches) > 0 {
				return ""
			}
		}
		return "no TPU found (no /dev/accel* or /dev/vfio/<n> device)"
	}
	return ""
}
