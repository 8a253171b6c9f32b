package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/estargz-rs/estargz-rs/bindings/go/snapshotter"
)

func TestManagerEnvAddsHeapTunablesUnlessSet(t *testing.T) {
	got := managerEnv([]string{"PATH=/bin", "NOTIFY_SOCKET=/run/x", "MALLOC_ARENA_MAX=4"})
	want := []string{"PATH=/bin", "MALLOC_ARENA_MAX=4", "MALLOC_MMAP_THRESHOLD_=131072"}
	if !slices.Equal(got, want) {
		t.Fatalf("managerEnv = %q, want %q", got, want)
	}
}

// The snapshotter (without a FUSE manager: no mounts are made) tells
// systemd it is ready, reloads its registry settings on SIGHUP, keeps them
// when the file is broken, and says it is stopping.
func TestReadyReloadAndStop(t *testing.T) {
	dir := t.TempDir()
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "notify.sock"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	t.Setenv("NOTIFY_SOCKET", filepath.Join(dir, "notify.sock"))
	next := func(want string) {
		t.Helper()
		buf := make([]byte, 256)
		_ = notify.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, err := notify.Read(buf)
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("NOTIFY_SOCKET got %q, %v; want %q", buf[:n], err, want)
		}
	}
	type reload struct {
		cfg snapshotter.Config
		err error
	}
	reloads := make(chan reload, 4)
	reloaded = func(c snapshotter.Config, err error) { reloads <- reload{c, err} }
	defer func() { reloaded = func(snapshotter.Config, error) {} }()
	config := filepath.Join(dir, "config.toml")
	write := func(text string) {
		if err := os.WriteFile(config, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	metrics := filepath.Join(dir, "metrics.sock")
	write(fmt.Sprintf("fuse_manager = false\nmetrics_address = %q\n", metrics))
	done := make(chan error, 1)
	go func() { done <- run(filepath.Join(dir, "sn.sock"), filepath.Join(dir, "root"), config, "warn", "") }()
	next("READY=1")
	// Without a FUSE manager the snapshotter mounts, so it serves the metrics.
	if text := scrape(t, metrics); !strings.Contains(text, "# TYPE estargz_registry_requests_total counter\n") {
		t.Fatalf("GET /metrics from the snapshotter:\n%s", text)
	}

	hup := func() reload {
		t.Helper()
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-reloads:
			return r
		case <-time.After(30 * time.Second):
			t.Fatal("no reload after SIGHUP")
		}
		return reload{}
	}
	write("fuse_manager = false\nretries = 3\nregistries_conf = \"/r.conf\"\nhosts_dir = \"/h\"\nprefetch = false\n")
	r := hup()
	if r.err != nil || r.cfg.Retries != 3 || r.cfg.RegistriesConf != "/r.conf" || r.cfg.HostsDir != "/h" {
		t.Fatalf("reload: %+v", r)
	}
	if !r.cfg.Prefetch {
		t.Fatal("prefetch (not a registry setting) changed without a restart")
	}
	write("retries = 1\nno_such_key = 1\n")
	if r := hup(); r.err == nil || !strings.Contains(r.err.Error(), "no_such_key") || r.cfg.Retries != 3 {
		t.Fatalf("broken file: %+v", r)
	}

	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	next("STOPPING=1")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after SIGTERM")
	}
	if _, err := os.Lstat(metrics); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the metrics socket after the stop: %v", err)
	}
}

// scrape is GET /metrics on the unix socket at path.
func scrape(t *testing.T, path string) string {
	t.Helper()
	c := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	resp, err := c.Get("http://metrics/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s, %v", resp.Status, err)
	}
	return string(body)
}

// A SIGHUP is passed on to the FUSE manager named by the pid file.
func TestSignalManagerPassesSIGHUPOn(t *testing.T) {
	root := t.TempDir()
	child := exec.Command("sleep", "30")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Process.Kill()
	pidFile := filepath.Join(root, "fuse-manager.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(child.Process.Pid)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	signalManager(root)
	err := child.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGHUP {
		t.Fatalf("the manager stand-in ended with %v, want SIGHUP", err)
	}
	// No pid file: nothing to signal, no panic.
	signalManager(t.TempDir())
}
