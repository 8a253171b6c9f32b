package snapshotter

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
)

const (
	digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	tocA    = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
)

func TestLayerFromLabels(t *testing.T) {
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   Layer
		ok     bool
	}{
		{"rpull", map[string]string{
			LabelStargzRef: "reg:5000/app:v1", LabelStargzDigest: digestA,
			LabelStargzLayers: digestA + "," + digestB, LabelTOCDigest: tocA,
		}, Layer{"reg:5000/app:v1", digestA, tocA, []string{digestA, digestB}}, true},
		{"cri wins over rpull", map[string]string{
			LabelCRIImageRef: "reg/cri:v1", LabelCRILayerDigest: digestB, LabelCRIImageLayers: digestB,
			LabelStargzRef: "reg/other:v1", LabelStargzDigest: digestA,
		}, Layer{"reg/cri:v1", digestB, "", []string{digestB}}, true},
		{"cri without a layer digest falls back to rpull's", map[string]string{
			LabelCRIImageRef: "reg/cri:v1", LabelStargzRef: "reg/other:v1", LabelStargzDigest: digestA,
		}, Layer{"reg/other:v1", digestA, "", nil}, true},
		{"toc digest alone", map[string]string{LabelTOCDigest: tocA}, Layer{}, false},
		{"none", nil, Layer{}, false},
	} {
		got, ok := LayerFromLabels(c.labels)
		if ok != c.ok || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %+v, %v; want %+v, %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

// fakeMounter stands in for FUSE: a mount writes a marker file into the
// mountpoint; it fails for the digests in fail.
type fakeMounter struct {
	mu     sync.Mutex
	fail   map[string]bool
	mounts map[string]Layer
}

type fakeMount struct {
	m    *fakeMounter
	dir  string
	busy bool
}

func (f *fakeMounter) Mount(_ context.Context, layer Layer, mountpoint string) (io.Closer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail[layer.Digest] {
		return nil, errors.New("registry unreachable")
	}
	if err := os.WriteFile(filepath.Join(mountpoint, "layer"), []byte(layer.Digest), 0o644); err != nil {
		return nil, err
	}
	f.mounts[mountpoint] = layer
	return &fakeMount{m: f, dir: mountpoint}, nil
}

func (m *fakeMount) Close() error {
	if m.busy {
		return errors.New("busy")
	}
	m.m.mu.Lock()
	defer m.m.mu.Unlock()
	delete(m.m.mounts, m.dir)
	return os.Remove(filepath.Join(m.dir, "layer"))
}

func (f *fakeMounter) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.mounts)
}

func rpullLabels(target, digest string) map[string]string {
	return map[string]string{
		LabelTargetRef: target, LabelStargzRef: "reg:5000/app:v1", LabelStargzDigest: digest, LabelTOCDigest: tocA,
	}
}

func TestPrepareRemoteLayers(t *testing.T) {
	ctx := namespaces.WithNamespace(context.Background(), "default")
	root := t.TempDir()
	fm := &fakeMounter{fail: map[string]bool{digestB: true}, mounts: map[string]Layer{}}
	sn, err := New(root, fm)
	if err != nil {
		t.Fatal(err)
	}

	// An eStargz layer: mounted, committed as the target, AlreadyExists.
	_, err = sn.Prepare(ctx, "extract-1 chainA", "", snapshots.WithLabels(rpullLabels("chainA", digestA)))
	if !errdefs.IsAlreadyExists(err) {
		t.Fatalf("Prepare of a remote layer: %v, want AlreadyExists", err)
	}
	info, err := sn.Stat(ctx, "chainA")
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != snapshots.KindCommitted || info.Labels[LabelRemote] == "" || info.Labels[LabelStargzDigest] != digestA {
		t.Errorf("committed remote snapshot: %+v", info)
	}
	if _, err := sn.Stat(ctx, "extract-1 chainA"); !errdefs.IsNotFound(err) {
		t.Errorf("the active snapshot is left: %v", err)
	}
	if fm.count() != 1 {
		t.Errorf("%d mounts, want 1", fm.count())
	}
	// Preparing an existing target answers AlreadyExists without mounting.
	if _, err := sn.Prepare(ctx, "extract-2 chainA", "", snapshots.WithLabels(rpullLabels("chainA", digestA))); !errdefs.IsAlreadyExists(err) || fm.count() != 1 {
		t.Errorf("Prepare of an existing target: %v, %d mounts", err, fm.count())
	}

	// The mount fails: an ordinary active snapshot to unpack into.
	mounts, err := sn.Prepare(ctx, "extract-3 chainB", "chainA", snapshots.WithLabels(rpullLabels("chainB", digestB)))
	if err != nil {
		t.Fatalf("Prepare falling back: %v", err)
	}
	if len(mounts) != 1 || mounts[0].Type != "overlay" {
		t.Fatalf("fallback mounts %+v", mounts)
	}
	opts := strings.Join(mounts[0].Options, ",")
	lowerA := filepath.Join(root, "snapshots", "1", "fs")
	if !strings.Contains(opts, "lowerdir="+lowerA) || !strings.Contains(opts, "upperdir=") {
		t.Errorf("overlay options %q: want the remote layer's mount %s as lower dir", opts, lowerA)
	}
	if err := sn.Commit(ctx, "chainB", "extract-3 chainB"); err != nil {
		t.Fatal(err)
	}
	if info, _ := sn.Stat(ctx, "chainB"); info.Labels[LabelRemote] != "" {
		t.Error("a pulled layer is labelled remote")
	}

	// A container on top: two lower dirs, the upper layer first.
	mounts, err = sn.Prepare(ctx, "container", "chainB")
	if err != nil {
		t.Fatal(err)
	}
	if want := "lowerdir=" + filepath.Join(root, "snapshots", "2", "fs") + ":" + lowerA; !strings.Contains(strings.Join(mounts[0].Options, ","), want) {
		t.Errorf("container mounts %+v, want %s", mounts, want)
	}
	// A view of one layer binds it read-only.
	mounts, err = sn.View(ctx, "view", "chainA")
	if err != nil || len(mounts) != 1 || mounts[0].Type != "bind" || mounts[0].Source != lowerA || mounts[0].Options[0] != "ro" {
		t.Errorf("view mounts %+v, %v", mounts, err)
	}
	var names []string
	if err := sn.Walk(ctx, func(_ context.Context, i snapshots.Info) error { names = append(names, i.Name); return nil },
		"labels.\"containerd.io/snapshot/remote\""); err != nil || !reflect.DeepEqual(names, []string{"chainA"}) {
		t.Errorf("remote snapshots %v, %v", names, err)
	}

	// A restart: the remote layer is mounted again from its labels.
	if err := sn.Close(); err != nil {
		t.Fatal(err)
	}
	if fm.count() != 0 {
		t.Errorf("%d mounts after Close", fm.count())
	}
	sn, err = New(root, fm)
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	fm.mu.Lock()
	fm.fail[digestA] = true
	fm.mu.Unlock()
	if pending, err := sn.Restore(ctx); err != nil || !reflect.DeepEqual(pending, []string{"chainA"}) {
		t.Errorf("restore with the registry down: %v, %v", pending, err)
	}
	fm.mu.Lock()
	fm.fail[digestA] = false
	fm.mu.Unlock()
	if pending, err := sn.Restore(ctx); err != nil || len(pending) != 0 || fm.count() != 1 {
		t.Errorf("restore: %v, %v, %d mounts", pending, err, fm.count())
	}
	if data, err := os.ReadFile(filepath.Join(lowerA, "layer")); err != nil || string(data) != digestA {
		t.Errorf("restored mount: %q, %v", data, err)
	}

	// Removal top-down unmounts the remote layer and deletes every directory.
	for _, key := range []string{"view", "container", "chainB", "chainA"} {
		if err := sn.Remove(ctx, key); err != nil {
			t.Errorf("Remove %s: %v", key, err)
		}
	}
	if fm.count() != 0 {
		t.Errorf("%d mounts left", fm.count())
	}
	left, _ := os.ReadDir(filepath.Join(root, "snapshots"))
	if len(left) != 0 {
		t.Errorf("snapshot directories left: %v", left)
	}
}

func TestBusyLayerIsNotRemoved(t *testing.T) {
	ctx := namespaces.WithNamespace(context.Background(), "default")
	fm := &fakeMounter{fail: map[string]bool{}, mounts: map[string]Layer{}}
	sn, err := New(t.TempDir(), fm)
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	if pending, err := sn.Restore(ctx); err != nil || len(pending) != 0 {
		t.Errorf("restore of a new store: %v, %v", pending, err)
	}
	if _, err := sn.Prepare(ctx, "k", "", snapshots.WithLabels(rpullLabels("chainA", digestA))); !errdefs.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	sn.mu.Lock()
	for _, m := range sn.mounts {
		m.(*fakeMount).busy = true
	}
	sn.mu.Unlock()
	if err := sn.Remove(ctx, "chainA"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("Remove of a busy layer: %v", err)
	}
	if _, err := sn.Stat(ctx, "chainA"); err != nil {
		t.Errorf("the busy snapshot is gone: %v", err)
	}
	sn.mu.Lock()
	for _, m := range sn.mounts {
		m.(*fakeMount).busy = false
	}
	sn.mu.Unlock()
}

func TestConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(`
cache_dir = "/c"
disk_cache_size = 1000
background_fetch = false
request_timeout_sec = 5
insecure_registries = ["127.0.0.1:5000"]
registries_conf = "/r.conf"
certs_dir = "/certs.d"
hosts_dir = ""
open_ahead = false
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path, false)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.CacheDir, want.DiskCacheSize, want.BackgroundFetch, want.RequestTimeoutSec = "/c", 1000, false, 5
	want.InsecureRegistries = []string{"127.0.0.1:5000"}
	want.RegistriesConf, want.CertsDir, want.HostsDir = "/r.conf", "/certs.d", ""
	want.OpenAhead = false
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("config %+v, want %+v", cfg, want)
	}
	if err := os.WriteFile(path, []byte("no_such_key = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path, false); err == nil {
		t.Error("an unknown key is accepted")
	}
	if err := os.WriteFile(path, []byte("mount_threads = -1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path, false); err == nil {
		t.Error("mount_threads = -1 is accepted")
	}
	missing := filepath.Join(dir, "none.toml")
	if cfg, err := LoadConfig(missing, true); err != nil || !reflect.DeepEqual(cfg, DefaultConfig()) ||
		cfg.HostsDir != "/etc/containerd/certs.d" {
		t.Errorf("missing default file: %+v, %v", cfg, err)
	}
	if _, err := LoadConfig(missing, false); err == nil {
		t.Error("a missing --config file is accepted")
	}
}

func TestManagerKeepsMountsAcrossClients(t *testing.T) {
	ctx, cancel := context.WithCancel(namespaces.WithNamespace(context.Background(), "default"))
	fm := &fakeMounter{fail: map[string]bool{}, mounts: map[string]Layer{}}
	sock := filepath.Join(t.TempDir(), "m.sock")
	served := make(chan error, 1)
	go func() { served <- ServeManager(ctx, sock, fm, "") }()

	root := t.TempDir()
	mm, err := DialManager(sock, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sn, err := New(root, mm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sn.Prepare(ctx, "k", "", snapshots.WithLabels(rpullLabels("chainA", digestA))); !errdefs.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	// The snapshotter goes away without unmounting; a new one takes the
	// mount back instead of mounting again.
	if err := sn.Detach(); err != nil {
		t.Fatal(err)
	}
	mm.Close()
	if fm.count() != 1 {
		t.Fatalf("%d mounts after the snapshotter left", fm.count())
	}
	fm.mu.Lock()
	fm.fail[digestA] = true // a new mount would fail
	fm.mu.Unlock()
	mm, err = DialManager(sock, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer mm.Close()
	sn, err = New(root, mm)
	if err != nil {
		t.Fatal(err)
	}
	if pending, err := sn.Restore(ctx); err != nil || len(pending) != 0 {
		t.Fatalf("restore: %v, %v", pending, err)
	}
	if err := sn.Remove(ctx, "chainA"); err != nil {
		t.Fatal(err)
	}
	if fm.count() != 0 {
		t.Errorf("%d mounts after Remove", fm.count())
	}
	if err := sn.Close(); err != nil {
		t.Fatal(err)
	}

	// The manager's stop unmounts what is left.
	if _, err := mm.Mount(ctx, Layer{Ref: "r", Digest: digestB}, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if fm.count() != 0 {
		t.Errorf("%d mounts after the manager stopped", fm.count())
	}
}

// aheadMounter is a fakeMounter that also opens layers ahead, noting the
// order of its calls.
type aheadMounter struct {
	*fakeMounter
	calls []string
}

func (a *aheadMounter) OpenAhead(_ context.Context, layer Layer) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, "ahead "+strings.Join(aheadDigests(layer), ","))
	return nil
}

func (a *aheadMounter) Mount(ctx context.Context, layer Layer, mountpoint string) (io.Closer, error) {
	a.mu.Lock()
	a.calls = append(a.calls, "mount "+layer.Digest)
	a.mu.Unlock()
	return a.fakeMounter.Mount(ctx, layer, mountpoint)
}

// A Prepare opens the image's following layers ahead before it mounts its
// own, also through the FUSE manager; the last layer opens nothing ahead.
func TestPrepareOpensTheNextLayersAhead(t *testing.T) {
	ctx, cancel := context.WithCancel(namespaces.WithNamespace(context.Background(), "default"))
	defer cancel()
	am := &aheadMounter{fakeMounter: &fakeMounter{fail: map[string]bool{}, mounts: map[string]Layer{}}}
	sock := filepath.Join(t.TempDir(), "m.sock")
	served := make(chan error, 1)
	go func() { served <- ServeManager(ctx, sock, am, "") }()
	mm, err := DialManager(sock, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer mm.Close()
	sn, err := New(t.TempDir(), mm)
	if err != nil {
		t.Fatal(err)
	}
	labels := func(target, digest, layers string) map[string]string {
		l := rpullLabels(target, digest)
		l[LabelStargzLayers] = layers
		return l
	}
	if _, err := sn.Prepare(ctx, "k1", "", snapshots.WithLabels(labels("chainA", digestA, digestA+","+digestB))); !errdefs.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	// The last layer: nothing to open ahead.
	if _, err := sn.Prepare(ctx, "k2", "chainA", snapshots.WithLabels(labels("chainB", digestB, ""))); !errdefs.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	want := []string{"ahead " + digestA + "," + digestB, "mount " + digestA, "mount " + digestB}
	am.mu.Lock()
	got := am.calls
	am.mu.Unlock()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("calls\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if d := aheadDigests(Layer{Digest: digestB, Layers: []string{digestA}}); strings.Join(d, ",") != digestB+","+digestA {
		t.Errorf("aheadDigests: %v", d)
	}
	// Switched off: the mount only.
	sn.SetOpenAhead(false)
	if _, err := sn.Prepare(ctx, "k3", "", snapshots.WithLabels(labels("chainC", digestB, digestB+","+digestA))); !errdefs.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	am.mu.Lock()
	got = am.calls[len(want):]
	am.mu.Unlock()
	if len(got) != 1 || got[0] != "mount "+digestB {
		t.Errorf("calls with open ahead off: %q", got)
	}
	if err := sn.Close(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}
