package pjrt

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCheckPlugin(t *testing.T) {
	dir := t.TempDir()
	valid := filepath.Join(dir, "pjrt_c_api_stub_plugin.so")
	buildStub(t, valid, stubNullAPI)
	noEntry := filepath.Join(dir, "pjrt_c_api_noentry_plugin.so")
	buildStub(t, noEntry, stubNoEntryPoint)
	empty := filepath.Join(dir, "pjrt_c_api_empty_plugin.so")
	writeFile(t, empty, nil)
	garbage := filepath.Join(dir, "pjrt_c_api_garbage_plugin.so")
	writeFile(t, garbage, []byte("this is not an ELF file, just text with a .so name\n"))
	truncated := filepath.Join(dir, "pjrt_c_api_truncated_plugin.so")
	validBytes, err := os.ReadFile(valid)
	require.NoError(t, err)
	writeFile(t, truncated, validBytes[:100])

	tests := []struct {
		name    string
		path    string
		wantErr string
	}{
		{"stub exporting GetPjrtApi", valid, ""},
		{"missing file", filepath.Join(dir, "missing.so"), "not found: no such file"},
		{"directory", dir, "is a directory"},
		{"empty file", empty, "empty file"},
		{"text file", garbage, "not an ELF shared library"},
		{"truncated ELF", truncated, "not an ELF shared library"},
		{"library without entry point", noEntry, "does not export the function GetPjrtApi"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPlugin(tt.path)
			if tt.wantErr == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr, "got error %q, want it to contain %q", err, tt.wantErr)
			assert.Contains(t, err.Error(), tt.path, "the error should name the path")
		})
	}
}

// pluginTree is a temporary directory tree with plugins in every kind of place FindPlugins searches.
type pluginTree struct {
	root, home, module, libraryPathDir, sitePackages string

	custom, broken, goXLACPU, wheelCPU, cuda, tpu string
}

func newPluginTree(t *testing.T) *pluginTree {
	root := t.TempDir()
	tree := &pluginTree{
		root:           root,
		home:           filepath.Join(root, "home"),
		module:         filepath.Join(root, "module"),
		libraryPathDir: filepath.Join(root, "pjrt-path"),
	}
	tree.sitePackages = filepath.Join(tree.module, ".venv/lib/python3.11/site-packages")
	tree.custom = filepath.Join(tree.libraryPathDir, "pjrt_c_api_custom_plugin.so")
	tree.broken = filepath.Join(tree.libraryPathDir, "pjrt_c_api_broken_plugin.so")
	tree.goXLACPU = filepath.Join(tree.home, ".local/lib/go-xla/pjrt_c_api_cpu_v0.83.3_plugin.so")
	tree.wheelCPU = filepath.Join(tree.sitePackages, "xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so")
	tree.cuda = filepath.Join(tree.sitePackages, "jax_plugins/xla_cuda12/xla_cuda_plugin.so")
	tree.tpu = filepath.Join(tree.sitePackages, "libtpu/libtpu.so")

	for _, path := range []string{tree.custom, tree.goXLACPU, tree.wheelCPU, tree.cuda, tree.tpu} {
		buildStub(t, path, stubNullAPI)
	}
	writeFile(t, tree.broken, []byte("garbage"))
	// A file that matches no pattern is never a candidate.
	writeFile(t, filepath.Join(tree.libraryPathDir, "libunrelated.so"), []byte("garbage"))
	return tree
}

// options returns SearchOptions that see only this tree.
func (tree *pluginTree) options(plugin string) SearchOptions {
	return SearchOptions{
		Plugin:         plugin,
		LookupEnv:      envMap(map[string]string{PluginPathEnv: tree.libraryPathDir + "::relative/ignored"}),
		HomeDir:        tree.home,
		ModuleRoot:     tree.module,
		SkipSystemDirs: true,
	}
}

func foundPaths(d *Discovery) []string {
	paths := make([]string, len(d.Found))
	for i, plugin := range d.Found {
		paths[i] = plugin.Path
	}
	return paths
}

func TestFindPluginsInTree(t *testing.T) {
	tree := newPluginTree(t)
	fakeHardware(t, PlatformTPU)

	tests := []struct {
		name      string
		request   string
		wantFound []string
		wantBest  string
	}{
		{"any plugin prefers CUDA when the TPU is missing", "",
			[]string{tree.custom, tree.goXLACPU, tree.wheelCPU, tree.cuda, tree.tpu}, tree.cuda},
		{"cpu platform", PlatformCPU, []string{tree.goXLACPU, tree.wheelCPU}, tree.goXLACPU},
		{"exact go-xla name", "cpu_v0.83.3", []string{tree.goXLACPU}, tree.goXLACPU},
		{"tpu requested without hardware", PlatformTPU, []string{tree.tpu}, tree.tpu},
		{"custom name", "custom", []string{tree.custom}, tree.custom},
		{"path", tree.wheelCPU, []string{tree.wheelCPU}, tree.wheelCPU},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			discovery, err := FindPlugins(tree.options(tt.request))
			require.NoError(t, err)
			assert.Equal(t, tt.wantFound, foundPaths(discovery))
			best, ok := discovery.Best()
			require.True(t, ok)
			assert.Equal(t, tt.wantBest, best.Path)
		})
	}
}

func TestFindPluginsDescribesPlugins(t *testing.T) {
	tree := newPluginTree(t)
	fakeHardware(t, PlatformTPU)
	discovery, err := FindPlugins(tree.options(""))
	require.NoError(t, err)

	byPath := make(map[string]Plugin)
	for _, plugin := range discovery.Found {
		byPath[plugin.Path] = plugin
	}
	tests := []struct {
		path, wantName, wantPlatform, wantSource, wantMissing string
	}{
		{tree.custom, "custom", "custom", PluginPathEnv, ""},
		{tree.goXLACPU, "cpu_v0.83.3", PlatformCPU, "go-xla user directory", ""},
		{tree.wheelCPU, PlatformCPU, PlatformCPU, "Python package xla-cpu-pjrt in " + tree.sitePackages, ""},
		{tree.cuda, PlatformCUDA, PlatformCUDA, "Python package jax-cuda-pjrt in " + tree.sitePackages, ""},
		{tree.tpu, PlatformTPU, PlatformTPU, "Python package libtpu in " + tree.sitePackages, "no tpu device in this test"},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.path), func(t *testing.T) {
			plugin, ok := byPath[tt.path]
			require.True(t, ok, "plugin %s not found", tt.path)
			assert.Equal(t, tt.wantName, plugin.Name)
			assert.Equal(t, tt.wantPlatform, plugin.Platform)
			assert.Equal(t, tt.wantSource, plugin.Source)
			assert.Equal(t, tt.wantMissing, plugin.MissingHardware)
			assert.Positive(t, plugin.Size)
		})
	}

	require.Len(t, discovery.Rejected, 1)
	assert.Equal(t, tree.broken, discovery.Rejected[0].Path)
	assert.Contains(t, discovery.Rejected[0].Err.Error(), "not an ELF shared library")
}

func TestFindPluginsSkipsMissingHardware(t *testing.T) {
	tree := newPluginTree(t)
	fakeHardware(t, PlatformTPU, PlatformCUDA)
	discovery, err := FindPlugins(tree.options(""))
	require.NoError(t, err)
	best, ok := discovery.Best()
	require.True(t, ok)
	assert.Equal(t, tree.goXLACPU, best.Path, "with no TPU and no GPU the first CPU plugin wins")
}

func TestFindPluginsErrors(t *testing.T) {
	tree := newPluginTree(t)
	fakeHardware(t)

	tests := []struct {
		name     string
		request  string
		wantText []string
	}{
		{"unknown name", "rocm", []string{`no PJRT plugin named "rocm" found`, tree.libraryPathDir,
			filepath.Join(tree.home, ".local/lib/go-xla"), tree.sitePackages, "make xla-cpu"}},
		{"name of a broken file", "broken", []string{`no PJRT plugin named "broken" found`,
			"rejected PJRT plugin " + tree.broken + " is not an ELF shared library"}},
		{"broken path", tree.broken, []string{tree.broken, "not an ELF shared library", "make xla-cpu"}},
		{"missing path", filepath.Join(tree.root, "absent.so"), []string{"absent.so", "no such file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			discovery, err := FindPlugins(tree.options(tt.request))
			require.Error(t, err)
			var notFound *NotFoundError
			require.True(t, errors.As(err, &notFound), "got %T, want *NotFoundError", err)
			assert.Same(t, discovery, notFound.Discovery)
			assert.Empty(t, discovery.Found)
			for _, want := range tt.wantText {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

func TestFindPluginsEmptyTree(t *testing.T) {
	root := t.TempDir()
	home := filepath.Join(root, "home")
	venvSitePackages := filepath.Join(root, "venv/lib/python3.12/site-packages")
	require.NoError(t, os.MkdirAll(venvSitePackages, 0o755))
	ldDir := filepath.Join(root, "ld")

	_, err := FindPlugins(SearchOptions{
		LookupEnv: envMap(map[string]string{
			"VIRTUAL_ENV":     filepath.Join(root, "venv"),
			"LD_LIBRARY_PATH": ldDir,
		}),
		HomeDir:        home,
		ModuleRoot:     filepath.Join(root, "module-without-venv"),
		SkipSystemDirs: true,
	})
	require.Error(t, err)
	message := err.Error()
	for _, want := range []string{
		"no usable PJRT plugin found",
		filepath.Join(home, ".local/lib/go-xla") + " (go-xla user directory)",
		ldDir + " (LD_LIBRARY_PATH)",
		venvSitePackages + " (VIRTUAL_ENV)",
		"libtpu/libtpu.so",
		"make xla-cpu",
	} {
		assert.Contains(t, message, want)
	}
	assert.NotContains(t, message, "/usr/local/lib/go-xla", "SkipSystemDirs should leave system directories out")
}

func TestFindPluginsDeduplicatesSymlinks(t *testing.T) {
	tree := newPluginTree(t)
	fakeHardware(t)
	link := filepath.Join(tree.home, ".local/lib/go-xla/pjrt_c_api_custom_plugin.so")
	require.NoError(t, os.Symlink(tree.custom, link))
	discovery, err := FindPlugins(tree.options("custom"))
	require.NoError(t, err)
	assert.Equal(t, []string{tree.custom}, foundPaths(discovery))
}

func TestLdSoConfDirs(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "ld.so.conf"), []byte("# comment\ninclude conf.d/*.conf\n/opt/first\n\n"))
	writeFile(t, filepath.Join(dir, "conf.d/a.conf"), []byte("/opt/included # trailing comment\n"))
	writeFile(t, filepath.Join(dir, "conf.d/loop.conf"), []byte("include "+filepath.Join(dir, "conf.d/loop.conf")+"\n"))

	got := ldSoConfDirs(filepath.Join(dir, "ld.so.conf"), 0)
	assert.Equal(t, []string{"/opt/included", "/opt/first"}, got)
	assert.Nil(t, ldSoConfDirs(filepath.Join(dir, "missing.conf"), 0))
}

func TestPlatformOfName(t *testing.T) {
	tests := []struct{ name, want string }{
		{"cpu", PlatformCPU},
		{"cpu_v0.83.3", PlatformCPU},
		{"libpjrt_cpu", PlatformCPU},
		{"cuda13", PlatformCUDA},
		{"xla_cuda_plugin", PlatformCUDA},
		{"tpu", PlatformTPU},
		{"custom", "custom"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, platformOfName(tt.name), "platformOfName(%q)", tt.name)
	}
}

func TestMatchesTail(t *testing.T) {
	tests := []struct {
		pattern, path string
		want          bool
	}{
		{"libtpu/libtpu.so", "/usr/lib/python3/dist-packages/libtpu/libtpu.so", true},
		{"jax_plugins/xla_cuda*/xla_cuda_plugin.so", "/v/site-packages/jax_plugins/xla_cuda12/xla_cuda_plugin.so", true},
		{"libtpu/libtpu.so", "/tmp/libtpu.so", false},
		{"libtpu/libtpu.so", "libtpu.so", false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, matchesTail(tt.pattern, tt.path), "matchesTail(%q, %q)", tt.pattern, tt.path)
	}
}
