// Command estargz-snapshotter serves containerd's snapshots API
// (containerd.services.snapshots.v1.Snapshots) on a unix socket, for
// containerd's proxy_plugins: eStargz layers are mounted lazily from their
// registry, everything else is an ordinary overlay snapshot.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/contrib/snapshotservice"
	"github.com/containerd/log"
	"google.golang.org/grpc"

	"github.com/estargz-rs/estargz-rs/bindings/go/snapshotter"
)

const (
	defaultAddress = "/run/estargz-snapshotter/estargz-snapshotter.sock"
	defaultRoot    = "/var/lib/estargz-snapshotter"
	defaultConfig  = "/etc/estargz-snapshotter/config.toml"
	// How often remote snapshots that could not be mounted at start-up
	// (registry down) are tried again.
	restoreRetry = 5 * time.Second
)

func main() {
	address := flag.String("address", defaultAddress, "unix socket to serve the snapshots API on")
	root := flag.String("root", defaultRoot, "directory of the snapshots and their metadata")
	config := flag.String("config", defaultConfig, "TOML configuration (a missing default file means defaults)")
	level := flag.String("log-level", "info", "error, warn, info or debug")
	manager := flag.Bool("fuse-manager", false, "run as the FUSE manager of --root (started by the snapshotter itself)")
	metrics := flag.String("metrics-address", "", "serve Prometheus metrics at GET /metrics on HOST:PORT (e.g. 127.0.0.1:9100) or a unix socket (an absolute path); overrides metrics_address")
	flag.Parse()
	run := run
	if *manager {
		run = runManager
	}
	if err := run(*address, *root, *config, *level, *metrics); err != nil {
		fmt.Fprintf(os.Stderr, "estargz-snapshotter: %v\n", err)
		os.Exit(1)
	}
}

func run(address, root, configPath, level, metricsAddress string) error {
	if err := log.SetLevel(level); err != nil {
		return fmt.Errorf("--log-level %q: %w", level, err)
	}
	cfg, err := loadConfig(configPath, metricsAddress)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	local := snapshotter.NewReloadableMounter(cfg.MountOptions(root))
	var mounter snapshotter.Mounter = local
	watchReload(ctx, configPath, cfg, func(next snapshotter.Config) {
		local.SetOptions(next.MountOptions(root))
		if next.FuseManager {
			signalManager(root)
		}
	})
	if cfg.FuseManager {
		mm, err := startManager(root, configPath, level, cfg.MetricsAddress)
		if err != nil {
			return err
		}
		defer mm.Close()
		mounter = mm
	} else {
		// The counters are those of the process that mounts: this one.
		m, err := snapshotter.ServeMetrics(cfg.MetricsAddress)
		if err != nil {
			return err
		}
		defer m.Close()
	}
	sn, err := snapshotter.New(root, mounter)
	if err != nil {
		return err
	}
	sn.SetOpenAhead(cfg.OpenAhead)
	defer func() {
		// The manager's mounts stay for the next snapshotter; our own go.
		closeFn, what := sn.Close, "closing the snapshotter"
		if cfg.FuseManager {
			closeFn, what = sn.Detach, "detaching from the FUSE manager"
		}
		if err := closeFn(); err != nil {
			log.L.WithError(err).Error(what)
		}
	}()
	// Start-up never waits for a registry: what cannot be mounted now is
	// retried in the background.
	go restore(ctx, sn)

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
	sdNotify("READY=1")
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		log.L.Info("stopping")
		sdNotify("STOPPING=1")
		server.Stop()
		return nil
	}
}

// reloaded is called after each SIGHUP with the configuration now in use
// (tests wait on it).
var reloaded = func(snapshotter.Config, error) {}

// watchReload re-reads configPath on every SIGHUP until ctx is done and
// hands apply the configuration with its registry settings replaced (see
// Config.WithRegistrySettings); a file that fails to load changes nothing.
func watchReload(ctx context.Context, configPath string, cfg snapshotter.Config, apply func(snapshotter.Config)) {
	// Registered before returning: a SIGHUP right after start-up is not lost.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go reloadOnSignal(ctx, hup, configPath, cfg, apply)
}

func reloadOnSignal(ctx context.Context, hup chan os.Signal, configPath string, cfg snapshotter.Config, apply func(snapshotter.Config)) {
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		next, err := snapshotter.LoadConfig(configPath, configPath == defaultConfig)
		if err != nil {
			log.L.WithError(err).Error("SIGHUP: config not reloaded")
			reloaded(cfg, err)
			continue
		}
		var restart []string
		cfg, restart = cfg.WithRegistrySettings(next)
		if len(restart) > 0 {
			log.L.Warnf("SIGHUP: %s changed; they take effect at the next start", strings.Join(restart, ", "))
		}
		apply(cfg)
		log.L.Infof("SIGHUP: registry settings reloaded from %s (for layers mounted from now on)", configPath)
		reloaded(cfg, nil)
	}
}

// signalManager passes a SIGHUP on to the FUSE manager of root, which
// makes the mounts and reloads the same file.
func signalManager(root string) {
	b, err := os.ReadFile(filepath.Join(root, "fuse-manager.pid"))
	pid, perr := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || perr != nil || pid <= 1 {
		log.L.Warnf("SIGHUP: no FUSE manager pid in %s to pass it on to", root)
		return
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		log.L.WithError(err).Warn("SIGHUP: passing it on to the FUSE manager")
	}
}

// sdNotify sends a state line to systemd when it started us with
// Type=notify ($NOTIFY_SOCKET; '@' names an abstract socket).
func sdNotify(state string) {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return
	}
	if sock[0] == '@' {
		sock = "\x00" + sock[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		log.L.WithError(err).Warn("NOTIFY_SOCKET")
		return
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		log.L.WithError(err).Warn("NOTIFY_SOCKET")
	}
}

func restore(ctx context.Context, sn *snapshotter.Snapshotter) {
	for {
		pending, err := sn.Restore(ctx)
		if err != nil {
			log.L.WithError(err).Error("restoring remote snapshots")
		}
		if err == nil && len(pending) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(restoreRetry):
		}
	}
}

func managerSocket(root string) string { return filepath.Join(root, "fuse-manager.sock") }

// startManager connects to the FUSE manager of root, starting it (detached,
// in a session of its own, so it outlives this process) if none answers.
// The manager serves the metrics (its mounts have the counters), so they
// and their endpoint outlive a snapshotter restart too; a running manager
// keeps the address it was started with.
func startManager(root, configPath, level, metricsAddress string) (*snapshotter.ManagerMounter, error) {
	sock := managerSocket(root)
	if mm, err := snapshotter.DialManager(sock, 0); err == nil {
		log.L.Infof("using the running FUSE manager at %s", sock)
		if got, err := mm.MetricsAddress(); err == nil && got != metricsAddress && !samePort(got, metricsAddress) {
			log.L.Warnf("the running FUSE manager serves metrics at %q, not %q: stop it (SIGTERM, unmounts its layers) to change metrics_address", got, metricsAddress)
		}
		return mm, nil
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(root, "fuse-manager.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := []string{"--fuse-manager", "--root", root, "--config", configPath, "--log-level", level}
	if metricsAddress != "" {
		args = append(args, "--metrics-address", metricsAddress)
	}
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = managerEnv(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the FUSE manager: %w", err)
	}
	log.L.Infof("started the FUSE manager (pid %d)", cmd.Process.Pid)
	// Waited for, so a manager that fails at start-up (a metrics address
	// it cannot bind, a bad config) is reported at once with its last log
	// line instead of after the dial timeout, and is reaped.
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mm, err := snapshotter.DialManager(sock, 0)
		if err == nil {
			return mm, nil
		}
		select {
		case werr := <-exited:
			return nil, fmt.Errorf("the FUSE manager exited at start-up (%v): %s", werr, lastLine(logf.Name()))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w (its log: %s)", err, logf.Name())
		}
	}
}

// lastLine is the last non-empty line of the file at path (the manager's
// reason for exiting), or a pointer to the file.
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if err != nil || lines[len(lines)-1] == "" {
		return "see " + path
	}
	return lines[len(lines)-1]
}

// managerEnv is env without NOTIFY_SOCKET (systemd hears from the
// snapshotter only) plus glibc's heap tunables for the FUSE manager, unless
// already set: the library's FUSE and fetch threads allocate and free
// chunk buffers of up to a few MiB, which glibc's defaults (an arena per
// thread, a rising mmap threshold) keep resident. The values are those
// estargz-fuse sets for itself with mallopt (estargz-fuse/src/heap.rs);
// glibc reads them from the environment at start-up, before any thread.
// On the start-up benchmark they took the manager's peak RSS from about
// 120 to 50 MiB (BENCHMARKS.md).
func managerEnv(env []string) []string {
	env = slices.DeleteFunc(slices.Clone(env), func(e string) bool { return strings.HasPrefix(e, "NOTIFY_SOCKET=") })
	for _, kv := range []string{"MALLOC_ARENA_MAX=2", "MALLOC_MMAP_THRESHOLD_=131072"} {
		name := kv[:strings.IndexByte(kv, '=')+1]
		if !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, name) }) {
			env = append(env, kv)
		}
	}
	return env
}

// runManager is the FUSE manager: it owns the layer mounts until SIGINT or
// SIGTERM, then unmounts them.
func runManager(_, root, configPath, level, metricsAddress string) error {
	if err := log.SetLevel(level); err != nil {
		return err
	}
	cfg, err := loadConfig(configPath, metricsAddress)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	pidFile := filepath.Join(root, "fuse-manager.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(pidFile)
	mounter := snapshotter.NewReloadableMounter(cfg.MountOptions(root))
	watchReload(ctx, configPath, cfg, func(next snapshotter.Config) { mounter.SetOptions(next.MountOptions(root)) })
	return snapshotter.ServeManager(ctx, managerSocket(root), mounter, cfg.MetricsAddress)
}

// loadConfig reads the TOML configuration at configPath; a --metrics-address
// flag (metricsAddress, "" when not given) wins over its metrics_address.
func loadConfig(configPath, metricsAddress string) (snapshotter.Config, error) {
	cfg, err := snapshotter.LoadConfig(configPath, configPath == defaultConfig)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	if metricsAddress != "" {
		cfg.MetricsAddress = metricsAddress
	}
	return cfg, nil
}

// samePort says whether got, the address a manager serves (port 0 made
// concrete), is what want ("HOST:0") asked for.
func samePort(got, want string) bool {
	host, port, err := net.SplitHostPort(want)
	return err == nil && port == "0" && strings.HasPrefix(got, host+":")
}
