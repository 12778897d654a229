package train

import (
	"encoding/gob"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/gomlx/gomlx/pkg/core/dtypes"
	"github.com/gomlx/gomlx/pkg/core/shapes"
	"github.com/gomlx/gomlx/pkg/core/tensors"
	"github.com/gomlx/gomlx/pkg/ml/context"
)

// A checkpoint is one file, ckpt-<step>.gob, holding every context variable (weights, optimizer
// moments, g_v, the step counter, the dropout RNG state) and the run's metadata. It is written to a
// temporary file in the same directory, synced, and renamed into place, so a crash while writing
// never leaves a partial file under a checkpoint name. A CRC-32 of each variable's bytes catches a
// file damaged later.

const (
	checkpointPrefix = "ckpt-"
	checkpointSuffix = ".gob"
	checkpointFormat = 1
)

// CheckpointMeta is the metadata stored with a checkpoint.
type CheckpointMeta struct {
	Format int
	// Step is the number of completed training steps. Training resumes at this step, which also
	// fixes the position in the k-cycle, the learning-rate schedule and the data order.
	Step int64
	// Config is the training configuration, so a resumed run can check that it matches.
	Config Config
}

type checkpointVariable struct {
	Scope, Name string
	DType       dtypes.DType
	Dims        []int
	Trainable   bool
	Data        []byte
	CRC         uint32
}

type checkpointFile struct {
	Meta      CheckpointMeta
	Variables []checkpointVariable
}

// SaveCheckpoint writes every variable of ctx and meta to dir atomically, then deletes all but the
// newest keep checkpoints (keep <= 0 keeps them all). It returns the path written.
func SaveCheckpoint(dir string, ctx *context.Context, meta CheckpointMeta, keep int) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating checkpoint directory %s: %w", dir, err)
	}
	meta.Format = checkpointFormat
	file := checkpointFile{Meta: meta}
	var err error
	ctx.EnumerateVariables(func(v *context.Variable) {
		if err != nil {
			return
		}
		value, valueErr := v.Value()
		if valueErr != nil {
			err = fmt.Errorf("reading variable %s: %w", v.ScopeAndName(), valueErr)
			return
		}
		var data []byte
		if bytesErr := value.ConstBytes(func(raw []byte) { data = append([]byte(nil), raw...) }); bytesErr != nil {
			err = fmt.Errorf("reading variable %s: %w", v.ScopeAndName(), bytesErr)
			return
		}
		file.Variables = append(file.Variables, checkpointVariable{
			Scope: v.Scope(), Name: v.Name(), DType: v.DType(), Dims: v.Shape().Dimensions,
			Trainable: v.Trainable, Data: data, CRC: crc32.ChecksumIEEE(data),
		})
	})
	if err != nil {
		return "", err
	}

	path := filepath.Join(dir, fmt.Sprintf("%s%010d%s", checkpointPrefix, meta.Step, checkpointSuffix))
	if err := writeAtomically(path, func(w io.Writer) error { return gob.NewEncoder(w).Encode(&file) }); err != nil {
		return "", err
	}
	if keep > 0 {
		if err := pruneCheckpoints(dir, keep); err != nil {
			return path, err
		}
	}
	return path, nil
}

// writeAtomically writes path through a temporary file in the same directory that is synced and
// then renamed over path, and syncs the directory so the rename itself survives a crash.
func writeAtomically(path string, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("creating a temporary file in %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err = write(tmp); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", tmp.Name(), err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", tmp.Name(), err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", tmp.Name(), path, err)
	}
	if d, openErr := os.Open(dir); openErr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// ListCheckpoints returns the checkpoint files in dir, oldest first. Temporary files of an
// interrupted write are not listed. A missing directory has no checkpoints.
func ListCheckpoints(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing checkpoints in %s: %w", dir, err)
	}
	var paths []string
	for _, e := range entries {
		name := e.Name()
		if !e.IsDir() && strings.HasPrefix(name, checkpointPrefix) && strings.HasSuffix(name, checkpointSuffix) {
			paths = append(paths, filepath.Join(dir, name))
		}
	}
	sort.Strings(paths) // The step is zero-padded, so the names sort by step.
	return paths, nil
}

func pruneCheckpoints(dir string, keep int) error {
	paths, err := ListCheckpoints(dir)
	if err != nil {
		return err
	}
	for len(paths) > keep {
		if err := os.Remove(paths[0]); err != nil {
			return fmt.Errorf("removing old checkpoint %s: %w", paths[0], err)
		}
		paths = paths[1:]
	}
	return nil
}

// LoadCheckpoint reads the checkpoint at path and creates or overwrites each of its variables in
// ctx, with its saved trainable flag. It returns the metadata.
func LoadCheckpoint(path string, ctx *context.Context) (CheckpointMeta, error) {
	f, err := os.Open(path)
	if err != nil {
		return CheckpointMeta{}, fmt.Errorf("opening checkpoint: %w", err)
	}
	defer func() { _ = f.Close() }()
	var file checkpointFile
	if err := gob.NewDecoder(f).Decode(&file); err != nil {
		return CheckpointMeta{}, fmt.Errorf("checkpoint %s is damaged or truncated (%v): delete it to resume from the previous one", path, err)
	}
	if file.Meta.Format != checkpointFormat {
		return CheckpointMeta{}, fmt.Errorf("checkpoint %s has format %d, this program reads format %d", path, file.Meta.Format, checkpointFormat)
	}
	for _, cv := range file.Variables {
		shape := shapes.Make(cv.DType, cv.Dims...)
		if crc32.ChecksumIEEE(cv.Data) != cv.CRC || len(cv.Data) != int(shape.Memory()) {
			return CheckpointMeta{}, fmt.Errorf("checkpoint %s: variable %s:%s is damaged (checksum or size mismatch): delete the file to resume from the previous one",
				path, cv.Scope, cv.Name)
		}
		value := tensors.FromShape(shape)
		if err := value.MutableBytes(func(raw []byte) { copy(raw, cv.Data) }); err != nil {
			return CheckpointMeta{}, fmt.Errorf("checkpoint %s: restoring variable %s:%s: %w", path, cv.Scope, cv.Name, err)
		}
		v := ctx.GetVariableByScopeAndName(cv.Scope, cv.Name)
		if v == nil {
			v = ctx.InAbsPath(cv.Scope).Checked(false).VariableWithValue(cv.Name, value)
		} else if err := v.SetValue(value); err != nil {
			return CheckpointMeta{}, fmt.Errorf("checkpoint %s: setting variable %s:%s: %w", path, cv.Scope, cv.Name, err)
		}
		v.SetTrainable(cv.Trainable)
	}
	return file.Meta, nil
}
