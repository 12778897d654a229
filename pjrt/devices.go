package pjrt

import (
	"fmt"
	"io"

	"github.com/gomlx/gomlx/backends"
)

// ListDevices writes the backend's name and description and then one line per device, such as
// "device 0: TFRT_CPU_0 [processId=0]", for a -list-devices flag. It returns the first write error.
func ListDevices(w io.Writer, backend backends.Backend) error {
	if _, err := fmt.Fprintf(w, "backend %s: %s\n", backend.Name(), backend.Description()); err != nil {
		return err
	}
	for i := range backend.NumDevices() {
		device := backends.DeviceNum(i)
		if _, err := fmt.Fprintf(w, "device %d: %s\n", i, backend.DeviceDescription(device)); err != nil {
			return err
		}
	}
	return nil
}
