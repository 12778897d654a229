package pjrt

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// C sources of the stub libraries that the tests build.
const (
	// stubNullAPI exports GetPjrtApi, so it passes CheckPlugin, but returns no API table.
	stubNullAPI = "void *GetPjrtApi(void) { return 0; }\n"

	// stubNoEntryPoint is a shared library that is no PJRT plugin.
	stubNoEntryPoint = "int not_a_plugin(void) { return 1; }\n"
)

// buildStub compiles source into a shared library at path with the system C compiler, which cgo
// needs anyway. The test is skipped when no compiler is found.
func buildStub(t *testing.T, path, source string) {
	t.Helper()
	compiler, err := exec.LookPath("cc")
	if err != nil {
		t.Skipf("no C compiler (cc) on PATH to build stub plugins: %v", err)
	}
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	sourcePath := path + ".c"
	require.NoError(t, os.WriteFile(sourcePath, []byte(source), 0o644))
	output, err := exec.Command(compiler, "-shared", "-fPIC", "-o", path, sourcePath).CombinedOutput()
	require.NoErrorf(t, err, "compiling stub %s: %s", path, output)
	require.NoError(t, os.Remove(sourcePath))
}

// writeFile creates path with the given content, making its directory.
func writeFile(t *testing.T, path string, content []byte) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, content, 0o644))
}

// envMap returns a LookupEnv function that reads only the given variables.
func envMap(vars map[string]string) func(string) (string, bool) {
	return func(key string) (string, bool) {
		value, ok := vars[key]
		return value, ok
	}
}

// fakeHardware replaces detectHardware for the test: platforms in missing lack their devices.
func fakeHardware(t *testing.T, missing ...string) {
	t.Helper()
	saved := detectHardware
	t.Cleanup(func() { detectHardware = saved })
	detectHardware = func(platform string) string {
		for _, m := range missing {
			if m == platform {
				return "no " + platform + " device in this test"
			}
		}
		return ""
	}
}
