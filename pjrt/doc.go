// Package pjrt picks the GoMLX backend for this project's programs: GoMLX's XLA backend on a
// PJRT plugin when one is installed, and the pure-Go backend (simplego) otherwise.
//
// Select takes a configuration in GOMLX_BACKEND's format ("auto", "go", "xla:cpu",
// "xla:/path/to/plugin.so", ...) and returns the backend with a Choice to print. FindPlugins
// searches go-xla's directories, PJRT_PLUGIN_LIBRARY_PATH, LD_LIBRARY_PATH, /etc/ld.so.conf, and
// the files that Python packages install (the xla-cpu-pjrt and fastatomstruct-xla-cpu wheels,
// JAX's CUDA plugin and libtpu). It checks each file's ELF headers without loading it.
//
// Nothing here downloads a plugin: GoMLX v0.26.0 would fetch one from GitHub for a plugin name,
// so Select resolves names to absolute paths itself and turns GoMLX's auto-install off.
// `make xla-cpu` installs the CPU plugin into the repository's .venv.
//
// Importing this package registers both backends with GoMLX. Builds with the noxla tag or with
// CGO_ENABLED=0 leave out the XLA backend; Select then rejects XLA requests.
// Plugin discovery assumes Linux shared libraries (ELF .so files).
package pjrt
