package estargz

// #include <estargz.h>
// #include <stdlib.h>
import "C"

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unsafe"
)

// RemoteOption configures OpenRemote.
type RemoteOption func(*remoteOptions) error

type remoteOptions struct {
	layer              string
	plainHTTP          bool
	insecure           []string
	authFile           string
	registriesConf     string
	certsDir           string
	hostsDir           string
	requestTimeout     time.Duration
	retries            int
	retriesSet         bool
	platform           string
	cacheDir           string
	diskCacheSize      int64
	memoryCacheSize    int64
	allowUnverifiedTOC bool
	prefetch           bool
}

// WithLayerDigest selects the layer with this digest ("sha256:...").
// Without a layer option the image must have exactly one layer.
func WithLayerDigest(digest string) RemoteOption {
	return func(o *remoteOptions) error {
		// The library reads a selector without ':' as an index.
		if !strings.Contains(digest, ":") {
			return goError(CodeInvalidArgument, fmt.Sprintf("layer digest %q is not algorithm:hex", digest))
		}
		o.layer = digest
		return noNUL("layer digest", digest)
	}
}

// WithLayerIndex selects the layer by its index in the manifest (0 is the
// bottom layer).
func WithLayerIndex(i int) RemoteOption {
	return func(o *remoteOptions) error {
		if i < 0 {
			return goError(CodeInvalidArgument, fmt.Sprintf("layer index %d is negative", i))
		}
		o.layer = strconv.Itoa(i)
		return nil
	}
}

// WithPlainHTTP talks plain HTTP (no TLS) to every registry.
func WithPlainHTTP() RemoteOption {
	return func(o *remoteOptions) error {
		o.plainHTTP = true
		return nil
	}
}

// WithInsecureRegistry talks plain HTTP to the registry host ("host" or
// "host:port", as in the reference); others keep HTTPS.
func WithInsecureRegistry(host string) RemoteOption {
	return func(o *remoteOptions) error {
		o.insecure = append(o.insecure, host)
		return noNUL("registry host", host)
	}
}

// WithAuthFile reads credentials from this auth file (containers
// auth.json or docker config.json format) instead of the default ones.
func WithAuthFile(path string) RemoteOption {
	return func(o *remoteOptions) error {
		o.authFile = path
		return noNUL("auth file", path)
	}
}

// WithRegistriesConf reads mirrors, location rewrites, insecure and
// blocked registries from this containers-registries.conf(5) file (read
// when the options are applied: a missing or bad file is an error then).
func WithRegistriesConf(path string) RemoteOption {
	return func(o *remoteOptions) error {
		o.registriesConf = path
		return noNUL("registries.conf", path)
	}
}

// WithCertsDir searches only dir for certs.d-style TLS files of a registry
// host (dir/HOST[:PORT]/*.crt CAs, a *.cert + *.key client certificate)
// instead of /etc/containers/certs.d and /etc/docker/certs.d.
func WithCertsDir(dir string) RemoteOption {
	return func(o *remoteOptions) error {
		o.certsDir = dir
		return noNUL("certs directory", dir)
	}
}

// WithHostsDir reads containerd's registry host configuration from dir
// (config_path, e.g. /etc/containerd/certs.d): a registry with a
// dir/HOST[:PORT]/hosts.toml (or dir/_default/hosts.toml) is pulled from
// its mirrors and server as their capabilities allow, with their ca,
// client, skip_verify and header settings; a host directory without one
// is a certs.d directory.
func WithHostsDir(dir string) RemoteOption {
	return func(o *remoteOptions) error {
		o.hostsDir = dir
		return noNUL("hosts directory", dir)
	}
}

// WithRequestTimeout bounds each HTTP request attempt (default 30 s).
func WithRequestTimeout(d time.Duration) RemoteOption {
	return func(o *remoteOptions) error {
		if d < time.Millisecond {
			return goError(CodeInvalidArgument, fmt.Sprintf("request timeout %v is below 1ms", d))
		}
		o.requestTimeout = d
		return nil
	}
}

// WithRetries sets the retries per request on network errors, timeouts,
// 429 and 5xx answers (default 5).
func WithRetries(n int) RemoteOption {
	return func(o *remoteOptions) error {
		if n < 0 || n > 1000 {
			return goError(CodeInvalidArgument, fmt.Sprintf("retries %d is not in 0-1000", n))
		}
		o.retries, o.retriesSet = n, true
		return nil
	}
}

// WithPlatform picks "os/arch[/variant]" from a multi-platform index
// (default: this host's platform).
func WithPlatform(platform string) RemoteOption {
	return func(o *remoteOptions) error {
		o.platform = platform
		return noNUL("platform", platform)
	}
}

// WithCacheDir keeps verified chunks in a disk cache under dir, bounded
// to diskCacheSize bytes (0: 2 GiB). The readers and mounts of one process
// that name the same dir share one cache, memory tier and limits included
// (those of the first to open it, while it stays open).
func WithCacheDir(dir string, diskCacheSize int64) RemoteOption {
	return func(o *remoteOptions) error {
		if diskCacheSize < 0 {
			return goError(CodeInvalidArgument, fmt.Sprintf("disk cache size %d is negative", diskCacheSize))
		}
		o.cacheDir, o.diskCacheSize = dir, diskCacheSize
		return noNUL("cache directory", dir)
	}
}

// WithMemoryCacheSize bounds the in-memory cache of verified chunks, in
// bytes (0: the default, 64 MiB): per cache directory in the process (see
// WithCacheDir), else per reader or mount.
func WithMemoryCacheSize(size int64) RemoteOption {
	return func(o *remoteOptions) error {
		if size < 0 {
			return goError(CodeInvalidArgument, fmt.Sprintf("memory cache size %d is negative", size))
		}
		o.memoryCacheSize = size
		return nil
	}
}

// WithAllowUnverifiedTOC opens layers without the
// "containerd.io/snapshot/stargz/toc.digest" annotation (refused by
// default: their TOC is not anchored to the manifest).
func WithAllowUnverifiedTOC() RemoteOption {
	return func(o *remoteOptions) error {
		o.allowUnverifiedTOC = true
		return nil
	}
}

// WithPrefetch sets whether OpenRemote fetches the layer's prioritized
// files (up to its prefetch landmark) before it returns. On by default, as
// in the estargz and estargz-fuse commands; WithPrefetch(false) skips it.
func WithPrefetch(on bool) RemoteOption {
	return func(o *remoteOptions) error {
		o.prefetch = on
		return nil
	}
}

// cOptions builds the C options; the caller frees them with
// freeRemoteOptions.
func (o *remoteOptions) cOptions() (*C.estargz_remote_options, error) {
	var p *C.estargz_remote_options
	if err := call(func() C.estargz_result { return C.estargz_remote_options_new(&p) }); err != nil {
		return nil, err
	}
	liveHandles.Add(1)
	withString := func(s string, f func(*C.char) C.estargz_result) func() C.estargz_result {
		return func() C.estargz_result {
			cs := C.CString(s)
			defer C.free(unsafe.Pointer(cs))
			return f(cs)
		}
	}
	steps := []func() C.estargz_result{
		func() C.estargz_result { return C.estargz_remote_options_set_plain_http(p, C.bool(o.plainHTTP)) },
		func() C.estargz_result {
			return C.estargz_remote_options_set_request_timeout_ms(p, C.uint64_t(o.requestTimeout/time.Millisecond))
		},
		func() C.estargz_result {
			return C.estargz_remote_options_set_memory_cache_size(p, C.uint64_t(o.memoryCacheSize))
		},
		func() C.estargz_result {
			return C.estargz_remote_options_set_allow_unverified_toc(p, C.bool(o.allowUnverifiedTOC))
		},
		func() C.estargz_result { return C.estargz_remote_options_set_prefetch(p, C.bool(o.prefetch)) },
	}
	if o.retriesSet {
		steps = append(steps, func() C.estargz_result {
			return C.estargz_remote_options_set_retries(p, C.uint32_t(o.retries))
		})
	}
	for _, h := range o.insecure {
		steps = append(steps, withString(h, func(s *C.char) C.estargz_result {
			return C.estargz_remote_options_add_insecure_registry(p, s)
		}))
	}
	if o.authFile != "" {
		steps = append(steps, withString(o.authFile, func(s *C.char) C.estargz_result {
			return C.estargz_remote_options_set_auth_file(p, s)
		}))
	}
	if o.registriesConf != "" {
		steps = append(steps, withString(o.registriesConf, func(s *C.char) C.estargz_result {
			return C.estargz_remote_options_set_registries_conf(p, s)
		}))
	}
	if o.certsDir != "" {
		steps = append(steps, withString(o.certsDir, func(s *C.char) C.estargz_result {
			return C.estargz_remote_options_set_certs_dir(p, s)
		}))
	}
	if o.hostsDir != "" {
		steps = append(steps, withString(o.hostsDir, func(s *C.char) C.estargz_result {
			return C.estargz_remote_options_set_hosts_dir(p, s)
		}))
	}
	if o.platform != "" {
		steps = append(steps, withString(o.platform, func(s *C.char) C.estargz_result {
			return C.estargz_remote_options_set_platform(p, s)
		}))
	}
	if o.cacheDir != "" {
		steps = append(steps, withString(o.cacheDir, func(s *C.char) C.estargz_result {
			return C.estargz_remote_options_set_cache_dir(p, s, C.uint64_t(o.diskCacheSize))
		}))
	}
	for _, step := range steps {
		if err := call(step); err != nil {
			freeRemoteOptions(p)
			return nil, err
		}
	}
	return p, nil
}

func freeRemoteOptions(p *C.estargz_remote_options) {
	C.estargz_remote_options_free(p)
	liveHandles.Add(-1)
}

// OpenRemote opens one layer of the image ref ("host[:port]/repo:tag" or
// "host[:port]/repo@sha256:...", optionally written with skopeo's
// "docker://" prefix) for lazy reading from its registry:
// opening fetches the manifest, the config, and the layer's footer and TOC;
// reads fetch only the parts of the blob they need, verified against their
// chunk digests, and the TOC is checked against the layer's TOC digest
// annotation. Network failures match ErrNetwork, ErrTimeout, ErrRegistry
// or ErrUnauthorized.
//
// If ctx is done before the open completes, OpenRemote returns ctx.Err()
// at once; the request in flight finishes in the background (bounded by
// the timeout and retries) and its result is discarded.
func OpenRemote(ctx context.Context, ref string, opts ...RemoteOption) (*Reader, error) {
	o := &remoteOptions{prefetch: true}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := noNUL("reference", ref); err != nil {
		return nil, err
	}
	copts, err := o.cOptions()
	if err != nil {
		return nil, err
	}
	type result struct {
		p   *C.estargz_reader
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer freeRemoteOptions(copts)
		cref := C.CString(ref)
		defer C.free(unsafe.Pointer(cref))
		var clayer *C.char
		if o.layer != "" {
			clayer = C.CString(o.layer)
			defer C.free(unsafe.Pointer(clayer))
		}
		var p *C.estargz_reader
		err := call(func() C.estargz_result { return C.estargz_reader_open_remote(cref, clayer, copts, &p) })
		done <- result{p, err}
	}()
	select {
	case res := <-done:
		if res.err != nil {
			return nil, res.err
		}
		return newReader(res.p, context.Background()), nil
	case <-ctx.Done():
		go func() {
			// Free what the abandoned open produces.
			if res := <-done; res.err == nil {
				C.estargz_reader_free(res.p)
			}
		}()
		return nil, ctx.Err()
	}
}
