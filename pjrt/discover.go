package pjrt

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// PluginPathEnv is the environment variable that go-xla reads for a colon-separated list of
// directories holding PJRT plugins.
const PluginPathEnv = "PJRT_PLUGIN_LIBRARY_PATH"

// SearchOptions configures FindPlugins. The zero value searches every place for any plugin.
type SearchOptions struct {
	// Plugin is the plugin the user asked for: a name (cpu, cuda, tpu, or NAME of a file
	// pjrt_c_api_NAME_plugin.so) or a path to a shared library, which FindPlugins makes absolute.
	// Empty accepts any plugin.
	Plugin string

	// LookupEnv reads environment variables. Nil means os.LookupEnv.
	LookupEnv func(key string) (string, bool)

	// HomeDir replaces the user's home directory. Empty means os.UserHomeDir.
	HomeDir string

	// ModuleRoot is the directory whose .venv is searched. Empty means the nearest directory with a
	// go.mod above the working directory or above the executable.
	ModuleRoot string

	// SkipSystemDirs leaves out the directories that neither HomeDir, ModuleRoot nor an environment
	// variable names: /usr/local/lib/go-xla, the directories of /etc/ld.so.conf and the system
	// Python's site-packages.
	SkipSystemDirs bool

	// AskPython also searches the site-packages directories that `python3 -c 'import site; ...'`
	// prints. Starting Python took 0.13 s on a 2-core machine, so this is off by default. The
	// directory list is cached for the life of the process.
	AskPython bool
}

// Plugin is a PJRT plugin file that FindPlugins accepted.
type Plugin struct {
	// Name is the plugin name that go-xla uses: NAME in pjrt_c_api_NAME_plugin.so. For files that
	// Python packages install, it is the platform.
	Name string

	// Platform is the kind of device the plugin drives: PlatformCPU, PlatformCUDA, PlatformTPU, or
	// Name for any other plugin.
	Platform string

	// Path is the absolute path of the shared library.
	Path string

	// Source describes where the file was found, for example "PJRT_PLUGIN_LIBRARY_PATH" or
	// "Python package libtpu in /usr/lib/python3/dist-packages".
	Source string

	// Size is the file size in bytes.
	Size int64

	// MissingHardware is empty when the plugin's devices were detected, and otherwise describes
	// what is missing. It is always empty for CPU plugins.
	MissingHardware string
}

// Place is one location that FindPlugins searched.
type Place struct {
	// Dir is the directory searched, or the file checked when File is true.
	Dir string

	// Source is the reason Dir was searched, for example "go-xla user directory".
	Source string

	// SitePackages is true for Python site-packages directories, which are searched for the files
	// that Python packages install rather than for pjrt_c_api_NAME_plugin.so.
	SitePackages bool

	// File is true when Dir is a single file: the requested path or a system libtpu.so.
	File bool
}

// Rejection is a file that matched a plugin pattern but failed CheckPlugin.
type Rejection struct {
	Path   string
	Source string
	Err    error
}

// Discovery is the result of FindPlugins: every place searched and every candidate file it met.
type Discovery struct {
	// Request is SearchOptions.Plugin: a name, an absolute path, or empty for any plugin.
	Request string

	// Tried lists the places searched, in search order.
	Tried []Place

	// Found lists the plugins that passed CheckPlugin and match Request, in search order, one per
	// file after resolving symbolic links.
	Found []Plugin

	// Rejected lists the candidate files that failed CheckPlugin.
	Rejected []Rejection

	// Warnings lists searches that could not run, such as a failed python3 call.
	Warnings []string
}

// libraryPatterns are the file names go-xla v0.1.4 recognises as plugins in a library directory;
// the first capture group is the plugin name.
var libraryPatterns = []struct {
	glob string
	name *regexp.Regexp
}{
	{"pjrt_c_api_*_plugin.so", regexp.MustCompile(`^pjrt_c_api_(.+)_plugin\.so$`)},
	{"pjrt_plugin_*.so", regexp.MustCompile(`^pjrt_plugin_(.+)\.so$`)},
	{"pjrt-plugin-*.so", regexp.MustCompile(`^pjrt-plugin-(.+)\.so$`)},
}

// pythonPlugins are the plugin files that Python packages install, relative to site-packages.
var pythonPlugins = []struct {
	glob     string
	platform string
	pkg      string
}{
	// OpenXLA's CPU plugin wheel: xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so.
	{"xla_plugins/xla_cpu*/xla_cpu*.so", PlatformCPU, "xla-cpu-pjrt"},
	{"fastatomstruct_xla_cpu/libpjrt_cpu.so", PlatformCPU, "fastatomstruct-xla-cpu"},
	// JAX's CUDA plugins: jax_plugins/xla_cuda12/xla_cuda_plugin.so and the cuda13 one.
	{"jax_plugins/xla_cuda*/xla_cuda_plugin.so", PlatformCUDA, "jax-cuda-pjrt"},
	// The libtpu wheel, which `pip install jax[tpu]` pulls in on TPU VMs, installs libtpu/libtpu.so.
	{"libtpu/libtpu.so", PlatformTPU, "libtpu"},
}

// pythonPluginGlobs returns the patterns that FindPlugins tries in each site-packages directory.
func pythonPluginGlobs() []string {
	globs := make([]string, len(pythonPlugins))
	for i, p := range pythonPlugins {
		globs[i] = p.glob
	}
	return globs
}

// FindPlugins searches for PJRT plugins without loading any of them. It returns an error when no
// plugin matches opts.Plugin, or when opts.Plugin is empty and no plugin has its hardware present.
// The Discovery is returned in both cases, and the error lists every place searched, every file
// rejected with its reason, and how to install a plugin.
//
// When opts.Plugin is a path, only that file is checked. Otherwise the search order is:
//   - the directories of PJRT_PLUGIN_LIBRARY_PATH;
//   - go-xla's directories: ~/.local/lib/go-xla, /usr/local/lib/go-xla, their nvidia
//     subdirectories, and the older gomlx/pjrt ones;
//   - LD_LIBRARY_PATH and the directories of /etc/ld.so.conf;
//   - the site-packages directories of $VIRTUAL_ENV, $CONDA_PREFIX, the module's .venv, the
//     user's ~/.local and the system Python.
func FindPlugins(opts SearchOptions) (*Discovery, error) {
	s := newSearch(opts)
	if isPathRequest(opts.Plugin) {
		path, err := filepath.Abs(opts.Plugin)
		if err != nil {
			path = opts.Plugin
		}
		s.tryFile(path, "requested path")
	} else {
		for _, place := range s.libraryDirs() {
			s.tryLibraryDir(place)
		}
		if !s.opts.SkipSystemDirs && s.matchesRequest(PlatformTPU, PlatformTPU) {
			for _, path := range systemLibTPUPaths {
				if _, err := os.Stat(path); err == nil {
					s.tryFile(path, "system libtpu")
				}
			}
		}
		for _, place := range s.sitePackagesDirs() {
			s.trySitePackages(place)
		}
	}

	if _, ok := s.discovery.Best(); !ok {
		return s.discovery, &NotFoundError{Discovery: s.discovery}
	}
	return s.discovery, nil
}

// isPathRequest reports whether a plugin request names a file rather than a plugin.
func isPathRequest(request string) bool {
	return strings.ContainsRune(request, filepath.Separator) || strings.HasSuffix(request, ".so")
}

// Best returns the plugin to use. A path request returns the file when it passed CheckPlugin. A
// name request returns the first plugin found with that name or platform, even when its hardware
// was not detected, so that loading it reports the real failure. With no request, Best prefers
// TPU, then CUDA, then CPU plugins, skipping those whose hardware is missing.
func (d *Discovery) Best() (Plugin, bool) {
	if d.Request != "" {
		if len(d.Found) == 0 {
			return Plugin{}, false
		}
		return d.Found[0], true
	}
	for _, platform := range []string{PlatformTPU, PlatformCUDA, PlatformCPU} {
		for _, plugin := range d.Found {
			if plugin.Platform == platform && plugin.MissingHardware == "" {
				return plugin, true
			}
		}
	}
	for _, plugin := range d.Found {
		if plugin.MissingHardware == "" {
			return plugin, true
		}
	}
	return Plugin{}, false
}

// String lists the places searched, the plugins found and the files rejected, one per line.
func (d *Discovery) String() string {
	var b strings.Builder
	var libraryDirs, siteDirs []Place
	for _, place := range d.Tried {
		switch {
		case place.File:
			fmt.Fprintf(&b, "checked the file %s (%s)\n", place.Dir, place.Source)
		case place.SitePackages:
			siteDirs = append(siteDirs, place)
		default:
			libraryDirs = append(libraryDirs, place)
		}
	}
	if len(libraryDirs) > 0 {
		globs := make([]string, len(libraryPatterns))
		for i, p := range libraryPatterns {
			globs[i] = p.glob
		}
		fmt.Fprintf(&b, "searched for %s in:\n", strings.Join(globs, ", "))
		for _, place := range libraryDirs {
			fmt.Fprintf(&b, "  %s (%s)\n", place.Dir, place.Source)
		}
	}
	if len(siteDirs) > 0 {
		fmt.Fprintf(&b, "searched for %s in:\n", strings.Join(pythonPluginGlobs(), ", "))
		for _, place := range siteDirs {
			fmt.Fprintf(&b, "  %s (%s)\n", place.Dir, place.Source)
		}
	}
	for _, plugin := range d.Found {
		fmt.Fprintf(&b, "found %s plugin %s (%s, %d MB)", plugin.Platform, plugin.Path, plugin.Source, plugin.Size>>20)
		if plugin.MissingHardware != "" {
			fmt.Fprintf(&b, ", unusable here: %s", plugin.MissingHardware)
		}
		b.WriteString("\n")
	}
	for _, rejection := range d.Rejected {
		fmt.Fprintf(&b, "rejected %v\n", rejection.Err)
	}
	for _, warning := range d.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", warning)
	}
	return b.String()
}

// InstallHint is the instruction for installing a PJRT plugin that ends NotFoundError messages.
const InstallHint = "To install the CPU plugin, run `make xla-cpu` in the repository root: it pip-installs " +
	"the xla-cpu-pjrt wheel into .venv, where FindPlugins looks. Alternatively set " + PluginPathEnv +
	" to a directory holding pjrt_c_api_NAME_plugin.so, or pass the plugin's absolute path in " +
	"the backend configuration, as in GOMLX_BACKEND=xla:/path/to/plugin.so."

// NotFoundError is the error FindPlugins returns when no usable plugin matches the request.
type NotFoundError struct {
	Discovery *Discovery
}

// Error describes the request, lists what was searched and rejected, and ends with InstallHint.
func (e *NotFoundError) Error() string {
	d := e.Discovery
	var summary string
	switch {
	case d.Request == "":
		summary = "no usable PJRT plugin found"
		if len(d.Found) > 0 {
			summary = "no PJRT plugin found whose hardware is present"
		}
	case isPathRequest(d.Request):
		summary = fmt.Sprintf("requested PJRT plugin %s is not usable", d.Request)
	default:
		summary = fmt.Sprintf("no PJRT plugin named %q found", d.Request)
	}
	return summary + "\n" + d.String() + InstallHint
}

// search holds the state of one FindPlugins call.
type search struct {
	opts      SearchOptions
	discovery *Discovery
	seenDirs  map[string]bool
	seenFiles map[string]bool
}

func newSearch(opts SearchOptions) *search {
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	if opts.HomeDir == "" {
		opts.HomeDir, _ = os.UserHomeDir()
	}
	if opts.ModuleRoot == "" {
		opts.ModuleRoot = findModuleRoot()
	}
	return &search{
		opts:      opts,
		discovery: &Discovery{Request: opts.Plugin},
		seenDirs:  make(map[string]bool),
		seenFiles: make(map[string]bool),
	}
}

// env returns the value of an environment variable, or "" when it is unset.
func (s *search) env(key string) string {
	value, _ := s.opts.LookupEnv(key)
	return value
}

// libraryDirs lists the directories searched for pjrt_c_api_NAME_plugin.so, in go-xla's order.
func (s *search) libraryDirs() []Place {
	var places []Place
	add := func(dir, source string) {
		if dir != "" && filepath.IsAbs(dir) {
			places = append(places, Place{Dir: filepath.Clean(dir), Source: source})
		}
	}

	for _, dir := range strings.Split(s.env(PluginPathEnv), ":") {
		add(dir, PluginPathEnv)
	}
	if home := s.opts.HomeDir; home != "" {
		add(filepath.Join(home, ".local/lib/go-xla"), "go-xla user directory")
		add(filepath.Join(home, ".local/lib/go-xla/nvidia"), "go-xla user directory")
		add(filepath.Join(home, ".local/lib/gomlx/pjrt"), "older gomlx user directory")
	}
	if !s.opts.SkipSystemDirs {
		add("/usr/local/lib/go-xla", "go-xla system directory")
		add("/usr/local/lib/go-xla/nvidia", "go-xla system directory")
		add("/usr/local/lib/gomlx/pjrt", "older gomlx system directory")
	}
	for _, dir := range strings.Split(s.env("LD_LIBRARY_PATH"), ":") {
		add(dir, "LD_LIBRARY_PATH")
	}
	if !s.opts.SkipSystemDirs {
		for _, dir := range ldSoConfDirs("/etc/ld.so.conf", 0) {
			add(dir, "/etc/ld.so.conf")
		}
	}
	return places
}

// ldSoConfDirs returns the directories that an ld.so.conf file lists, following its include lines.
// Unreadable files give no directories, as they do for the dynamic linker.
func ldSoConfDirs(confPath string, depth int) []string {
	const maxIncludeDepth = 8
	if depth > maxIncludeDepth {
		return nil
	}
	file, err := os.Open(confPath)
	if err != nil {
		return nil
	}
	defer func() { _ = file.Close() }()

	var dirs []string
	scanner := bufio.NewScanner(file)
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		if pattern, ok := strings.CutPrefix(line, "include"); ok && (pattern == "" || pattern[0] == ' ' || pattern[0] == '\t') {
			pattern = strings.TrimSpace(pattern)
			if !filepath.IsAbs(pattern) {
				pattern = filepath.Join(filepath.Dir(confPath), pattern)
			}
			matches, _ := filepath.Glob(pattern)
			for _, included := range matches {
				dirs = append(dirs, ldSoConfDirs(included, depth+1)...)
			}
			continue
		}
		dirs = append(dirs, line)
	}
	return dirs
}

// sitePackagesDirs lists the Python site-packages directories to search, in order.
func (s *search) sitePackagesDirs() []Place {
	var places []Place
	addGlob := func(pattern, source string) {
		matches, _ := filepath.Glob(pattern)
		for _, dir := range matches {
			places = append(places, Place{Dir: dir, Source: source, SitePackages: true})
		}
	}
	addPrefix := func(prefix, source string) {
		if prefix == "" || !filepath.IsAbs(prefix) {
			return
		}
		addGlob(filepath.Join(prefix, "lib*/python3*/site-packages"), source)
	}

	addPrefix(s.env("VIRTUAL_ENV"), "VIRTUAL_ENV")
	addPrefix(s.env("CONDA_PREFIX"), "CONDA_PREFIX")
	if s.opts.ModuleRoot != "" {
		addPrefix(filepath.Join(s.opts.ModuleRoot, ".venv"), "module .venv")
	}
	if home := s.opts.HomeDir; home != "" {
		addGlob(filepath.Join(home, ".local/lib/python3*/site-packages"), "Python user site-packages")
	}
	if !s.opts.SkipSystemDirs {
		addGlob("/usr/local/lib/python3*/dist-packages", "system Python")
		addGlob("/usr/local/lib/python3*/site-packages", "system Python")
		addGlob("/usr/lib/python3/dist-packages", "system Python")
		addGlob("/usr/lib/python3*/site-packages", "system Python")
	}
	if s.opts.AskPython {
		dirs, err := pythonSitePackages()
		if err != nil {
			s.discovery.Warnings = append(s.discovery.Warnings, err.Error())
		}
		for _, dir := range dirs {
			places = append(places, Place{Dir: dir, Source: "python3 site.getsitepackages()", SitePackages: true})
		}
	}
	return places
}

// markDirSeen records dir in Tried and returns false when it was already searched.
func (s *search) markDirSeen(place Place) bool {
	key := place.Dir
	if resolved, err := filepath.EvalSymlinks(place.Dir); err == nil {
		key = resolved
	}
	if s.seenDirs[key] {
		return false
	}
	s.seenDirs[key] = true
	s.discovery.Tried = append(s.discovery.Tried, place)
	return true
}

// tryLibraryDir checks the files in place.Dir whose names go-xla recognises as plugins.
func (s *search) tryLibraryDir(place Place) {
	if !s.markDirSeen(place) {
		return
	}
	for _, pattern := range libraryPatterns {
		matches, _ := filepath.Glob(filepath.Join(place.Dir, pattern.glob))
		for _, path := range matches {
			groups := pattern.name.FindStringSubmatch(filepath.Base(path))
			if groups == nil {
				continue
			}
			name, platform := groups[1], platformOfName(groups[1])
			if !s.matchesRequest(name, platform) {
				continue
			}
			s.tryCandidate(path, name, platform, place.Source)
		}
	}
}

// trySitePackages checks the plugin files that known Python packages install in place.Dir.
func (s *search) trySitePackages(place Place) {
	if !s.markDirSeen(place) {
		return
	}
	for _, known := range pythonPlugins {
		if !s.matchesRequest(known.platform, known.platform) {
			continue
		}
		matches, _ := filepath.Glob(filepath.Join(place.Dir, known.glob))
		for _, path := range matches {
			source := fmt.Sprintf("Python package %s in %s", known.pkg, place.Dir)
			s.tryCandidate(path, known.platform, known.platform, source)
		}
	}
}

// systemLibTPUPaths are the places where go-xla v0.1.4 looks for libtpu.so to detect a TPU.
var systemLibTPUPaths = []string{"/lib/libtpu.so", "/usr/lib/libtpu.so", "/usr/local/lib/libtpu.so"}

// tryFile checks a single file: the one that the user requested, or a system libtpu.so.
func (s *search) tryFile(path, source string) {
	s.discovery.Tried = append(s.discovery.Tried, Place{Dir: path, Source: source, File: true})
	base := filepath.Base(path)
	name := strings.TrimSuffix(base, ".so")
	for _, pattern := range libraryPatterns {
		if groups := pattern.name.FindStringSubmatch(base); groups != nil {
			name = groups[1]
			break
		}
	}
	platform := platformOfName(name)
	for _, known := range pythonPlugins {
		if matchesTail(known.glob, path) {
			platform = known.platform
			break
		}
	}
	s.tryCandidate(path, name, platform, source)
}

// matchesTail reports whether the last path elements of path match pattern, which has the form
// of a pythonPlugins glob such as "libtpu/libtpu.so".
func matchesTail(pattern, path string) bool {
	elements := strings.Split(filepath.ToSlash(path), "/")
	n := strings.Count(pattern, "/") + 1
	if len(elements) < n {
		return false
	}
	matched, _ := filepath.Match(pattern, strings.Join(elements[len(elements)-n:], "/"))
	return matched
}

// matchesRequest reports whether a plugin with this name and platform satisfies the request.
func (s *search) matchesRequest(name, platform string) bool {
	request := s.opts.Plugin
	return request == "" || request == name || request == platform
}

// tryCandidate runs CheckPlugin on path and records it as found or rejected.
func (s *search) tryCandidate(path, name, platform, source string) {
	key := path
	if resolved, err := filepath.EvalSymlinks(path); err == nil {
		key = resolved
	}
	if s.seenFiles[key] {
		return
	}
	s.seenFiles[key] = true

	if err := CheckPlugin(path); err != nil {
		s.discovery.Rejected = append(s.discovery.Rejected, Rejection{Path: path, Source: source, Err: err})
		return
	}
	var size int64
	if info, err := os.Stat(path); err == nil {
		size = info.Size()
	}
	s.discovery.Found = append(s.discovery.Found, Plugin{
		Name:            name,
		Platform:        platform,
		Path:            path,
		Source:          source,
		Size:            size,
		MissingHardware: detectHardware(platform),
	})
}

// findModuleRoot returns the nearest directory with a go.mod above the working directory, or
// above the executable when the working directory is outside any module, or "" when neither is.
func findModuleRoot() string {
	var starts []string
	if dir, err := os.Getwd(); err == nil {
		starts = append(starts, dir)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, dir := range starts {
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				return dir
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return ""
}

// pythonSitePackages runs python3 once per process and returns its site-packages directories.
var pythonSitePackages = sync.OnceValues(func() ([]string, error) {
	const timeout = 5 * time.Second
	python, err := exec.LookPath("python3")
	if err != nil {
		return nil, fmt.Errorf("python3 not found on PATH: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	script := "import json, site; print(json.dumps(site.getsitepackages() + [site.getusersitepackages()]))"
	output, err := exec.CommandContext(ctx, python, "-c", script).Output()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return nil, fmt.Errorf("%s timed out after %s while listing site-packages", python, timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("%s failed while listing site-packages: %w", python, err)
	}
	var dirs []string
	if err := json.Unmarshal(output, &dirs); err != nil {
		return nil, fmt.Errorf("%s printed %q instead of a JSON list of site-packages: %w", python, output, err)
	}
	return slices.DeleteFunc(dirs, func(dir string) bool { return !filepath.IsAbs(dir) }), nil
})
