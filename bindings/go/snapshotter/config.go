package snapshotter

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"time"

	"github.com/pelletier/go-toml"

	estargz "github.com/estargz-rs/estargz-rs/bindings/go"
)

// Config is the TOML configuration of estargz-snapshotter. Its keys are the
// names of docs/vocabulary.md; each maps onto one option of the bindings
// (and so of the C ABI's remote and mount options).
type Config struct {
	// CacheDir holds verified chunks, span files and passthrough copies
	// (default <root>/cache).
	CacheDir string `toml:"cache_dir"`
	// DiskCacheSize bounds CacheDir, in bytes (0: the library's 2 GiB).
	DiskCacheSize int64 `toml:"disk_cache_size"`
	// MemoryCacheSize bounds the in-memory chunk cache all layers share
	// (they name one cache directory), in bytes (0: the library's 64 MiB).
	MemoryCacheSize int64 `toml:"memory_cache_size"`
	// Prefetch fetches a layer's prioritized files once it is mounted.
	Prefetch bool `toml:"prefetch"`
	// BackgroundFetch fetches the rest of a layer in the background.
	BackgroundFetch bool `toml:"background_fetch"`
	// Passthrough hands fully cached files to the kernel.
	Passthrough bool `toml:"passthrough"`
	// MountThreads serve each layer mount's FUSE requests (0: 8).
	MountThreads int `toml:"mount_threads"`
	// RequestTimeoutSec bounds one HTTP attempt (0: the library's 30 s).
	RequestTimeoutSec int `toml:"request_timeout_sec"`
	// Retries per request (negative: the library's 5).
	Retries int `toml:"retries"`
	// PlainHTTP talks plain HTTP to every registry.
	PlainHTTP bool `toml:"plain_http"`
	// InsecureRegistries are reached over plain HTTP ("host[:port]").
	InsecureRegistries []string `toml:"insecure_registries"`
	// AuthFile replaces the default credential files (their credHelpers
	// and credsStore helpers are run as docker-credential-NAME).
	AuthFile string `toml:"auth_file"`
	// RegistriesConf is a containers-registries.conf(5) file: mirrors,
	// rewrites, insecure and blocked registries (default: none).
	RegistriesConf string `toml:"registries_conf"`
	// CertsDir replaces the certs.d directories searched for a registry's
	// CAs and client certificate (default /etc/containers/certs.d and
	// /etc/docker/certs.d).
	CertsDir string `toml:"certs_dir"`
	// HostsDir is containerd's registry host directory: HOST/hosts.toml
	// mirrors, server, ca, client, skip_verify and header ("": none).
	HostsDir string `toml:"hosts_dir"`
	// AllowUnverifiedTOC mounts layers without a TOC digest annotation.
	AllowUnverifiedTOC bool `toml:"allow_unverified_toc"`
	// OpenAhead opens an image's following layers when one is prepared,
	// so their mounts do not each wait for their own round trips.
	OpenAhead bool `toml:"open_ahead"`
	// FuseManager keeps the layer mounts in a process of their own, so
	// they outlive a snapshotter restart.
	FuseManager bool `toml:"fuse_manager"`
	// MetricsAddress serves Prometheus metrics at GET /metrics on
	// HOST:PORT or a unix socket (an absolute path), from the process that
	// mounts the layers (the FUSE manager, if on) ("": none).
	MetricsAddress string `toml:"metrics_address"`
}

// DefaultHostsDir is where containerd reads hosts.toml files (its CRI
// plugin's usual config_path), so the snapshotter pulls as containerd does.
const DefaultHostsDir = "/etc/containerd/certs.d"

// DefaultConfig is the configuration without a file: prefetch, background
// fetch, passthrough, open ahead and the FUSE manager on, the library's defaults elsewhere.
func DefaultConfig() Config {
	return Config{Prefetch: true, BackgroundFetch: true, Passthrough: true, Retries: -1, FuseManager: true,
		OpenAhead: true, HostsDir: DefaultHostsDir}
}

// LoadConfig reads path over DefaultConfig; a missing file is the default
// configuration when allowMissing is set. Unknown keys are refused.
func LoadConfig(path string, allowMissing bool) (Config, error) {
	cfg := DefaultConfig()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) && allowMissing {
		return cfg, nil
	}
	if err != nil {
		return cfg, err
	}
	if err := toml.NewDecoder(bytes.NewReader(data)).Strict(true).Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, cfg.check()
}

func (c Config) check() error {
	switch {
	case c.DiskCacheSize < 0, c.MemoryCacheSize < 0:
		return fmt.Errorf("cache sizes must not be negative")
	case c.MountThreads < 0 || c.MountThreads > 1024:
		return fmt.Errorf("mount_threads %d is not in 0-1024", c.MountThreads)
	case c.RequestTimeoutSec < 0:
		return fmt.Errorf("request_timeout_sec must not be negative")
	}
	return nil
}

// MountOptions are the bindings' options for a layer mount under root.
func (c Config) MountOptions(root string) []estargz.MountOption {
	cacheDir := c.CacheDir
	if cacheDir == "" {
		cacheDir = filepath.Join(root, "cache")
	}
	remote := []estargz.RemoteOption{
		estargz.WithCacheDir(cacheDir, c.DiskCacheSize),
		estargz.WithMemoryCacheSize(c.MemoryCacheSize),
		estargz.WithPrefetch(c.Prefetch),
	}
	if c.RequestTimeoutSec > 0 {
		remote = append(remote, estargz.WithRequestTimeout(time.Duration(c.RequestTimeoutSec)*time.Second))
	}
	if c.Retries >= 0 {
		remote = append(remote, estargz.WithRetries(c.Retries))
	}
	if c.PlainHTTP {
		remote = append(remote, estargz.WithPlainHTTP())
	}
	for _, h := range c.InsecureRegistries {
		remote = append(remote, estargz.WithInsecureRegistry(h))
	}
	if c.AuthFile != "" {
		remote = append(remote, estargz.WithAuthFile(c.AuthFile))
	}
	if c.RegistriesConf != "" {
		remote = append(remote, estargz.WithRegistriesConf(c.RegistriesConf))
	}
	if c.CertsDir != "" {
		remote = append(remote, estargz.WithCertsDir(c.CertsDir))
	}
	if c.HostsDir != "" {
		remote = append(remote, estargz.WithHostsDir(c.HostsDir))
	}
	if c.AllowUnverifiedTOC {
		remote = append(remote, estargz.WithAllowUnverifiedTOC())
	}
	opts := []estargz.MountOption{
		estargz.WithRemote(remote...),
		// Containers (overlayfs over the mount) run as other users.
		estargz.WithAllowOther(),
		estargz.WithBackgroundFetch(c.BackgroundFetch),
		estargz.WithPassthrough(c.Passthrough),
	}
	if c.MountThreads > 0 {
		opts = append(opts, estargz.WithMountThreads(c.MountThreads))
	}
	return opts
}

// WithRegistrySettings is c with the keys that say how registries are
// reached taken from next: the keys a SIGHUP reloads (the store's reload
// takes the same). It also names the other keys that differ, which need a
// restart.
func (c Config) WithRegistrySettings(next Config) (Config, []string) {
	out := c
	out.RequestTimeoutSec, out.Retries = next.RequestTimeoutSec, next.Retries
	out.PlainHTTP, out.InsecureRegistries = next.PlainHTTP, next.InsecureRegistries
	out.AuthFile, out.RegistriesConf = next.AuthFile, next.RegistriesConf
	out.CertsDir, out.HostsDir = next.CertsDir, next.HostsDir
	var restart []string
	cv, nv := reflect.ValueOf(out), reflect.ValueOf(next)
	for i := range cv.NumField() {
		if !reflect.DeepEqual(cv.Field(i).Interface(), nv.Field(i).Interface()) {
			restart = append(restart, reflect.TypeOf(out).Field(i).Tag.Get("toml"))
		}
	}
	return out, restart
}
