// Command stargz-grpc-bench serves upstream containerd-stargz-grpc's remote
// snapshotter (github.com/containerd/stargz-snapshotter v0.15.1, package
// service) as a containerd proxy plugin on a unix socket, for the
// containerd modes of benches/startup-bench.sh. It is our own driver over
// upstream's public packages: upstream's config defaults (prefetch and
// background fetch on, in-memory metadata, no FUSE manager), no metrics,
// no keychains (the bench registry is anonymous), and a flag for
// registries reached over plain HTTP.
//
// v0.15.1 is the version the Podman modes use (benches/stargz-store), so
// both compare against the same upstream file system code. Its Go code
// builds against containerd 1.7's packages; what containerd 1.6.20 sees is
// only the snapshots v1 gRPC service, which did not change between them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/containerd/reference"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/log"
	"github.com/containerd/stargz-snapshotter/service"
	"github.com/containerd/stargz-snapshotter/service/resolver"
	"google.golang.org/grpc"
)

func main() {
	address := flag.String("address", "", "unix socket to serve the snapshots service on (required)")
	root := flag.String("root", "", "directory for the snapshotter's state and caches (required)")
	plainHTTP := flag.String("plain-http", "", "comma-separated registry hosts (host:port) reached over http")
	logLevel := flag.String("log-level", "info", "trace, debug, info, warn or error")
	noPrefetch := flag.Bool("no-prefetch", false, "do not prefetch up to the prefetch landmark")
	noBackgroundFetch := flag.Bool("no-background-fetch", false, "do not fetch the rest of each layer in the background")
	flag.Parse()
	if *address == "" || *root == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: stargz-grpc-bench -address SOCKET -root DIR [-plain-http HOST,...] [-no-prefetch] [-no-background-fetch]")
		os.Exit(2)
	}
	if err := run(*address, *root, *plainHTTP, *logLevel, *noPrefetch, *noBackgroundFetch); err != nil {
		fmt.Fprintf(os.Stderr, "stargz-grpc-bench: %v\n", err)
		os.Exit(1)
	}
}

func run(address, root, plainHTTP, logLevel string, noPrefetch, noBackgroundFetch bool) error {
	if err := log.SetLevel(logLevel); err != nil {
		return fmt.Errorf("log level %q: %w", logLevel, err)
	}
	ctx, stop := signal.NotifyContext(log.WithLogger(context.Background(), log.L), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	var cfg service.Config
	cfg.NoPrefetch = noPrefetch
	cfg.NoBackgroundFetch = noBackgroundFetch
	// A fresh process per sample: the metrics registry is of no use.
	cfg.NoPrometheus = true
	hosts := withPlainHTTP(resolver.RegistryHostsFromConfig(resolver.Config{}), plainHTTP)
	sn, err := service.NewStargzSnapshotterService(ctx, root, &cfg, service.WithCustomRegistryHosts(hosts))
	if err != nil {
		return fmt.Errorf("snapshotter: %w", err)
	}
	// Close unmounts every layer (upstream's behaviour without the FUSE
	// manager), so the bench finds nothing mounted after a sample.
	defer func() {
		if err := sn.Close(); err != nil {
			log.L.WithError(err).Error("closing the snapshotter")
		}
	}()

	if err := os.MkdirAll(filepath.Dir(address), 0o711); err != nil {
		return err
	}
	if err := os.Remove(address); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	l, err := net.Listen("unix", address)
	if err != nil {
		return err
	}
	server := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(server, snapshotservice.FromSnapshotter(sn))
	errc := make(chan error, 1)
	go func() { errc <- server.Serve(l) }()
	log.L.Infof("serving snapshots on %s (root %s)", address, root)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		server.Stop()
		return nil
	}
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
