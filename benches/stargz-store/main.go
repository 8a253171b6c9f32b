// Command stargz-store-bench serves upstream stargz-store's Additional Layer
// Store (github.com/containerd/stargz-snapshotter v0.15.1, package store) at
// a mountpoint, for benches/startup-bench.sh. It is our own driver over
// upstream's public packages: upstream's config defaults (prefetch and
// background fetch on, in-memory metadata), no control socket or
// credentials (the bench registry is anonymous), and a flag for registries
// reached over plain HTTP.
//
// v0.15.1 is pinned because it is the last release that answers the
// layer-digest lookups of Podman 4.3 (containers/storage < 1.54).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/containerd/containerd/reference"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/log"
	"github.com/containerd/stargz-snapshotter/fs/config"
	memorymetadata "github.com/containerd/stargz-snapshotter/metadata/memory"
	"github.com/containerd/stargz-snapshotter/service/resolver"
	"github.com/containerd/stargz-snapshotter/store"
)

func main() {
	mountpoint := flag.String("mountpoint", "", "where to mount the store (required)")
	root := flag.String("root", "", "directory for the store's caches and state (required)")
	plainHTTP := flag.String("plain-http", "", "comma-separated registry hosts (host:port) reached over http")
	logLevel := flag.String("log-level", "info", "trace, debug, info, warn or error")
	noPrefetch := flag.Bool("no-prefetch", false, "do not prefetch up to the prefetch landmark")
	noBackgroundFetch := flag.Bool("no-background-fetch", false, "do not fetch the rest of each layer in the background")
	flag.Parse()
	if *mountpoint == "" || *root == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: stargz-store-bench -mountpoint DIR -root DIR [-plain-http HOST,...] [-no-prefetch] [-no-background-fetch]")
		os.Exit(2)
	}
	if err := run(*mountpoint, *root, *plainHTTP, *logLevel, *noPrefetch, *noBackgroundFetch); err != nil {
		fmt.Fprintf(os.Stderr, "stargz-store-bench: %v\n", err)
		os.Exit(1)
	}
}

func run(mountpoint, root, plainHTTP, logLevel string, noPrefetch, noBackgroundFetch bool) error {
	if err := log.SetLevel(logLevel); err != nil {
		return fmt.Errorf("log level %q: %w", logLevel, err)
	}
	ctx := log.WithLogger(context.Background(), log.L)
	for _, dir := range []string{mountpoint, root} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	cfg := config.Config{
		NoPrefetch:        noPrefetch,
		NoBackgroundFetch: noBackgroundFetch,
		// A fresh process per sample: the metrics registry is of no use.
		NoPrometheus: true,
	}
	hosts := withPlainHTTP(resolver.RegistryHostsFromConfig(resolver.Config{}), plainHTTP)
	manager, err := store.NewLayerManager(ctx, root, hosts, memorymetadata.NewReader, cfg)
	if err != nil {
		return fmt.Errorf("layer manager: %w", err)
	}
	if err := store.Mount(ctx, mountpoint, manager, false); err != nil {
		return fmt.Errorf("mounting at %s: %w", mountpoint, err)
	}
	// The bench stops us with SIGTERM or SIGINT; either unmounts.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	s := <-stop
	log.G(ctx).Infof("got %v, unmounting", s)
	if err := syscall.Unmount(mountpoint, 0); err != nil {
		// A busy mount (a container still using it) is detached instead.
		if err2 := syscall.Unmount(mountpoint, syscall.MNT_DETACH); err2 != nil {
			return fmt.Errorf("unmounting %s: %v (lazy: %v)", mountpoint, err, err2)
		}
	}
	return nil
}

// withPlainHTTP makes the listed hosts use http instead of https (upstream
// already does so for localhost names, not for 127.0.0.1 with a port).
func withPlainHTTP(hosts func(reference.Spec) ([]docker.RegistryHost, error), list string) func(reference.Spec) ([]docker.RegistryHost, error) {
	plain := map[string]bool{}
	for _, h := range strings.Split(list, ",") {
		if h = strings.TrimSpace(h); h != "" {
			plain[h] = true
		}
	}
	return func(ref reference.Spec) ([]docker.RegistryHost, error) {
		out, err := hosts(ref)
		for i := range out {
			if plain[out[i].Host] {
				out[i].Scheme = "http"
			}
		}
		return out, err
	}
}
