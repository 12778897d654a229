//go:build !cgo || noxla

package pjrt

import (
	"fmt"

	"github.com/gomlx/gomlx/backends"
)

// XLACompiledIn is false in builds with the noxla tag or with cgo disabled (CGO_ENABLED=0), which
// leave out GoMLX's XLA backend and go-xla's cgo code.
const XLACompiledIn = false

// newXLABackend fails, because this build leaves the XLA backend out.
func newXLABackend(plugin Plugin, _ []string, _ int, _ *Choice) (backends.Backend, error) {
	return nil, fmt.Errorf("cannot use PJRT plugin %s: this program was built with the noxla tag or with CGO_ENABLED=0, which leave the XLA backend out; rebuild with cgo and without the tag", plugin.Path)
}
