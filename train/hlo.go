package train

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
)

// GoMLX v0.26.0 exposes the text of a compiled program in one place only: its XLA backend
// (backends/xla/executable.go) logs "StableHLO program:\n<text>" through klog at verbosity 2
// while it compiles. The pure-Go backend compiles no text program, so nothing is written for it.
// captureStableHLO turns that log line on for executable.go alone (klog's -vmodule) and routes
// klog into a callback for the duration of one call, which is when context.Exec compiles.

// stableHLOMarker starts the klog message that carries a program.
const stableHLOMarker = "StableHLO program:\n"

// stableHLOModule matches the name of a StableHLO module, "module @name".
var stableHLOModule = regexp.MustCompile(`(?m)^module @([A-Za-z0-9_.$-]+)`)

// klogCapture serializes captures, because klog's logger and -vmodule are process-wide.
var klogCapture sync.Mutex

// captureStableHLO runs fn and writes every StableHLO program compiled during the call to dir, as
// NAME.mlir where NAME is the module name. Other klog messages of the call go to stderr, as
// klog's default settings write them.
//
// NOTE: for the call's duration, klog's logger is replaced and any logger set with klog.SetLogger
// is cleared afterwards; -vmodule gets "executable=2" added and is then restored.
func captureStableHLO(dir string, fn func() error) error {
	klogCapture.Lock()
	defer klogCapture.Unlock()

	flags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(flags)
	vmodule := flags.Lookup("vmodule")
	previous := vmodule.Value.String()
	spec := "executable=2"
	if previous != "" {
		spec = previous + "," + spec
	}
	if err := vmodule.Value.Set(spec); err != nil {
		return fmt.Errorf("turning on klog for executable.go to dump StableHLO: %w", err)
	}

	var programs [][]byte
	klog.SetLoggerWithOptions(logr.Discard(), klog.WriteKlogBuffer(func(data []byte) {
		if _, text, ok := bytes.Cut(data, []byte(stableHLOMarker)); ok {
			programs = append(programs, bytes.Clone(text))
			return
		}
		_, _ = os.Stderr.Write(data)
	}))
	runErr := fn()
	klog.ClearLogger()
	_ = vmodule.Value.Set(previous)

	writeErr := writeStableHLO(dir, programs)
	if runErr != nil {
		return runErr
	}
	return writeErr
}

// writeStableHLO writes each program to dir, named after its module.
func writeStableHLO(dir string, programs [][]byte) error {
	if len(programs) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating the StableHLO dump directory %s failed: %w (fix DumpHLODir or its permissions)", dir, err)
	}
	for i, text := range programs {
		name := fmt.Sprintf("program_%d", i)
		if m := stableHLOModule.FindSubmatch(text); m != nil {
			name = string(m[1])
		}
		path := filepath.Join(dir, name+".mlir")
		if err := os.WriteFile(path, text, 0o644); err != nil {
			return fmt.Errorf("writing the StableHLO of %s to %s failed: %w", name, path, err)
		}
	}
	return nil
}

// CountStableHLOOps returns how many times each StableHLO operation occurs in a program's text,
// keyed by its name without the "stablehlo." prefix, such as "all_reduce" or "dot_general".
// Operations inside the regions of reductions and other nested functions are counted too.
func CountStableHLOOps(text string) map[string]int {
	counts := map[string]int{}
	for _, m := range stableHLOOp.FindAllStringSubmatch(text, -1) {
		counts[m[1]]++
	}
	return counts
}

// stableHLOOp matches an operation in the generic form that go-xla prints, "stablehlo.add"(.
var stableHLOOp = regexp.MustCompile(`"stablehlo\.([a-z_]+)"`)

// ReadStableHLODump returns the programs that DumpHLODir holds, keyed by file name without the
// .mlir extension.
func ReadStableHLODump(dir string) (map[string]string, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.mlir"))
	if err != nil {
		return nil, fmt.Errorf("listing StableHLO files in %s: %w", dir, err)
	}
	programs := make(map[string]string, len(paths))
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading StableHLO file %s: %w", path, err)
		}
		programs[strings.TrimSuffix(filepath.Base(path), ".mlir")] = string(data)
	}
	return programs, nil
}
