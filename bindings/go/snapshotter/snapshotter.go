// Package snapshotter is a containerd snapshotter that mounts eStargz
// layers lazily from their registry (FUSE, through the estargz bindings)
// and serves everything else as overlay snapshots. The snapshot metadata
// lives in containerd's own bbolt store (snapshots/storage); layouts and
// mounts follow containerd's overlay snapshotter: every snapshot is a
// directory <root>/snapshots/<id> with an "fs" directory (for a remote
// layer, the FUSE mountpoint) and, for active snapshots, a "work"
// directory.
package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/storage"
	"github.com/containerd/continuity/fs"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// Mounter mounts one registry layer read-only at a directory; closing the
// result unmounts it (and fails, leaving it mounted, while it is busy).
type Mounter interface {
	Mount(ctx context.Context, layer Layer, mountpoint string) (io.Closer, error)
}

// Adopter is a Mounter whose mounts can outlive the snapshotter (the FUSE
// manager's): Mounted takes back one still served at mountpoint.
type Adopter interface {
	Mounted(ctx context.Context, mountpoint string) (io.Closer, bool)
}

// AheadOpener is a Mounter that can start opening layers before they are
// mounted (estargz.MountOpenAhead): containerd prepares an image's layers
// one after the other, so without it each mount waits for its own
// manifest, footer and TOC requests.
type AheadOpener interface {
	OpenAhead(ctx context.Context, layer Layer) error
}

// aheadDigests are the layers to open ahead when layer is prepared: it and
// the following ones its labels name; none when it is the last.
func aheadDigests(layer Layer) []string {
	out := []string{layer.Digest}
	for _, d := range layer.Layers {
		if d != layer.Digest {
			out = append(out, d)
		}
	}
	if len(out) < 2 {
		return nil
	}
	return out
}

// Snapshotter implements snapshots.Snapshotter.
type Snapshotter struct {
	root    string
	ms      *storage.MetaStore
	mounter Mounter

	// noOpenAhead: Prepare does not open the following layers ahead.
	noOpenAhead bool

	mu     sync.Mutex
	mounts map[string]io.Closer // snapshot id -> its layer mount
}

var _ snapshots.Snapshotter = (*Snapshotter)(nil)

// New opens (or creates) the snapshotter state under root. Remote
// snapshots recorded there are mounted again by Restore.
func New(root string, mounter Mounter) (*Snapshotter, error) {
	if err := os.MkdirAll(filepath.Join(root, "snapshots"), 0o700); err != nil {
		return nil, err
	}
	ms, err := storage.NewMetaStore(filepath.Join(root, "metadata.db"))
	if err != nil {
		return nil, err
	}
	return &Snapshotter{root: root, ms: ms, mounter: mounter, mounts: map[string]io.Closer{}}, nil
}

// SetOpenAhead sets whether a Prepare opens the following layers ahead
// when the mounter can (on by default); call it before serving.
func (s *Snapshotter) SetOpenAhead(on bool) { s.noOpenAhead = !on }

func (s *Snapshotter) dir(id string) string   { return filepath.Join(s.root, "snapshots", id) }
func (s *Snapshotter) fsDir(id string) string { return filepath.Join(s.dir(id), "fs") }

// Stat returns the info of the snapshot key.
func (s *Snapshotter) Stat(ctx context.Context, key string) (info snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		_, info, _, err = storage.GetInfo(ctx, key)
		return err
	})
	return info, err
}

// Update changes the labels of a snapshot.
func (s *Snapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (out snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		out, err = storage.UpdateInfo(ctx, info, fieldpaths...)
		return err
	})
	return out, err
}

// Usage is the disk use of a snapshot: measured for active ones, recorded
// at commit for the others (0 for a remote layer: its bytes are in the
// shared chunk cache).
func (s *Snapshotter) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	var (
		id    string
		info  snapshots.Info
		usage snapshots.Usage
	)
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		id, info, usage, err = storage.GetInfo(ctx, key)
		return err
	})
	if err != nil {
		return snapshots.Usage{}, err
	}
	if info.Kind == snapshots.KindActive {
		du, err := fs.DiskUsage(ctx, s.fsDir(id))
		if err != nil {
			return snapshots.Usage{}, err
		}
		usage = snapshots.Usage(du)
	}
	return usage, nil
}

// Mounts returns the mounts of an active or view snapshot.
func (s *Snapshotter) Mounts(ctx context.Context, key string) (mounts []mount.Mount, err error) {
	var snap storage.Snapshot
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		snap, err = storage.GetSnapshot(ctx, key)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("mounts of %q: %w", key, err)
	}
	return s.mountsOf(snap), nil
}

// Prepare creates an active snapshot. When the labels name an eStargz
// layer and its target, the layer is mounted from the registry instead,
// committed as the target, and the answer is ErrAlreadyExists: containerd
// then skips fetching and unpacking it.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	var base snapshots.Info
	for _, opt := range opts {
		if err := opt(&base); err != nil {
			return nil, err
		}
	}
	target, hasTarget := base.Labels[LabelTargetRef]
	if hasTarget {
		if _, err := s.Stat(ctx, target); err == nil {
			return nil, fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
		}
	}
	snap, err := s.create(ctx, snapshots.KindActive, key, parent, opts)
	if err != nil {
		return nil, err
	}
	if !hasTarget {
		return s.mountsOf(snap), nil
	}
	layer, ok := LayerFromLabels(base.Labels)
	if !ok {
		return s.mountsOf(snap), nil
	}
	if err := s.mountRemote(ctx, snap.ID, layer); err != nil {
		log.G(ctx).WithError(err).Warnf("layer %s of %s: not mounted lazily, containerd pulls it", layer.Digest, layer.Ref)
		return s.mountsOf(snap), nil
	}
	labels := map[string]string{}
	for k, v := range base.Labels {
		labels[k] = v
	}
	labels[LabelRemote] = remoteLabelValue
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		_, err := storage.CommitActive(ctx, key, target, snapshots.Usage{}, snapshots.WithLabels(labels))
		return err
	})
	if err != nil {
		s.unmount(ctx, snap.ID)
		return nil, fmt.Errorf("committing remote layer %s as %q: %w", layer.Digest, target, err)
	}
	log.G(ctx).Infof("layer %s of %s mounted lazily as %q", layer.Digest, layer.Ref, target)
	return nil, fmt.Errorf("target snapshot %q: %w", target, errdefs.ErrAlreadyExists)
}

// mountRemote mounts layer at the fs directory of snapshot id, first
// starting to open the image's following layers (and this one, so the
// manifest is fetched once for all of them).
func (s *Snapshotter) mountRemote(ctx context.Context, id string, layer Layer) error {
	if a, ok := s.mounter.(AheadOpener); ok && !s.noOpenAhead && len(aheadDigests(layer)) > 0 {
		if err := a.OpenAhead(ctx, layer); err != nil {
			log.G(ctx).WithError(err).Debugf("layer %s of %s: not opening the next layers ahead", layer.Digest, layer.Ref)
		}
	}
	m, err := s.mounter.Mount(ctx, layer, s.fsDir(id))
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.mounts[id] = m
	s.mu.Unlock()
	return nil
}

// unmount unmounts the layer of snapshot id, if it has one; false if it
// is still mounted (busy).
func (s *Snapshotter) unmount(ctx context.Context, id string) bool {
	s.mu.Lock()
	m, ok := s.mounts[id]
	s.mu.Unlock()
	if !ok {
		return true
	}
	if err := m.Close(); err != nil {
		log.G(ctx).WithError(err).Errorf("unmounting snapshot %s", id)
		return false
	}
	s.mu.Lock()
	delete(s.mounts, id)
	s.mu.Unlock()
	return true
}

// View creates a read-only snapshot of parent.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	snap, err := s.create(ctx, snapshots.KindView, key, parent, opts)
	if err != nil {
		return nil, err
	}
	return s.mountsOf(snap), nil
}

// Commit turns the active snapshot key into the committed snapshot name.
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	return s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		id, _, _, err := storage.GetInfo(ctx, key)
		if err != nil {
			return err
		}
		du, err := fs.DiskUsage(ctx, s.fsDir(id))
		if err != nil {
			return err
		}
		_, err = storage.CommitActive(ctx, key, name, snapshots.Usage(du), opts...)
		return err
	})
}

// Remove deletes a snapshot, unmounting its layer if it is remote. A busy
// layer mount fails the removal and keeps the snapshot.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	var id string
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) (err error) {
		id, _, _, err = storage.GetInfo(ctx, key)
		if err != nil {
			return err
		}
		if !s.unmount(ctx, id) {
			return fmt.Errorf("snapshot %q: its layer mount is busy: %w", key, errdefs.ErrFailedPrecondition)
		}
		_, _, err = storage.Remove(ctx, key)
		return err
	})
	if err != nil {
		return fmt.Errorf("removing %q: %w", key, err)
	}
	if err := os.RemoveAll(s.dir(id)); err != nil {
		log.G(ctx).WithError(err).Warnf("removing the directory of snapshot %s", id)
	}
	return nil
}

// Walk calls fn for every snapshot matching the filters.
func (s *Snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	return s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, fn, filters...)
	})
}

// Close unmounts every layer and closes the metadata store.
func (s *Snapshotter) Close() error {
	s.mu.Lock()
	ids := make([]string, 0, len(s.mounts))
	for id := range s.mounts {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	var errs []error
	for _, id := range ids {
		if !s.unmount(context.Background(), id) {
			errs = append(errs, fmt.Errorf("snapshot %s: layer mount busy", id))
		}
	}
	errs = append(errs, s.ms.Close())
	return errors.Join(errs...)
}

// Detach closes the metadata store and leaves every layer mounted (for
// mounts owned by a FUSE manager, which the next snapshotter takes back).
func (s *Snapshotter) Detach() error {
	return s.ms.Close()
}

// Restore mounts again the remote snapshots recorded in the store (after
// a restart). A layer that cannot be mounted now (registry down) is
// reported in the result and left for RestoreLater.
func (s *Snapshotter) Restore(ctx context.Context) (pending []string, err error) {
	type remote struct {
		id    string
		name  string
		layer Layer
	}
	var todo []remote
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, func(ctx context.Context, info snapshots.Info) error {
			if info.Labels[LabelRemote] == "" {
				return nil
			}
			layer, ok := LayerFromLabels(info.Labels)
			if !ok {
				return nil
			}
			id, _, _, err := storage.GetInfo(ctx, info.Name)
			if err != nil {
				return err
			}
			todo = append(todo, remote{id, info.Name, layer})
			return nil
		})
	})
	// A new store has no bucket yet: nothing to restore.
	if err != nil && !errdefs.IsNotFound(err) {
		return nil, err
	}
	for _, r := range todo {
		s.mu.Lock()
		_, mounted := s.mounts[r.id]
		s.mu.Unlock()
		if mounted {
			continue
		}
		if a, ok := s.mounter.(Adopter); ok {
			if m, ok := a.Mounted(ctx, s.fsDir(r.id)); ok {
				s.mu.Lock()
				s.mounts[r.id] = m
				s.mu.Unlock()
				log.G(ctx).Infof("remote snapshot %q: layer %s still mounted, taken back", r.name, r.layer.Digest)
				continue
			}
		}
		// The mount of a killed snapshotter is dead (ENOTCONN): detach it.
		_ = unix.Unmount(s.fsDir(r.id), unix.MNT_DETACH)
		if err := s.mountRemote(ctx, r.id, r.layer); err != nil {
			log.G(ctx).WithError(err).Warnf("remote snapshot %q: layer %s not mounted yet", r.name, r.layer.Digest)
			pending = append(pending, r.name)
			continue
		}
		log.G(ctx).Infof("remote snapshot %q: layer %s mounted again", r.name, r.layer.Digest)
	}
	return pending, nil
}

func (s *Snapshotter) create(ctx context.Context, kind snapshots.Kind, key, parent string, opts []snapshots.Opt) (snap storage.Snapshot, err error) {
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		snap, err = storage.CreateSnapshot(ctx, kind, key, parent, opts...)
		if err != nil {
			return err
		}
		dir := s.dir(snap.ID)
		// A directory left by an earlier crash with this id is stale.
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dir, "fs"), 0o755); err != nil {
			return err
		}
		if kind == snapshots.KindActive {
			if err := os.Mkdir(filepath.Join(dir, "work"), 0o711); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return storage.Snapshot{}, fmt.Errorf("creating snapshot %q: %w", key, err)
	}
	return snap, nil
}

// mountsOf: a bind mount of the snapshot's own directory without parents
// (or of the single parent, for a view), else an overlay whose lower
// directories are the parents' fs directories (FUSE mounts for remote
// layers).
func (s *Snapshotter) mountsOf(snap storage.Snapshot) []mount.Mount {
	ro := snap.Kind == snapshots.KindView
	if len(snap.ParentIDs) == 0 {
		opt := "rw"
		if ro {
			opt = "ro"
		}
		return []mount.Mount{{Type: "bind", Source: s.fsDir(snap.ID), Options: []string{opt, "rbind"}}}
	}
	if ro && len(snap.ParentIDs) == 1 {
		return []mount.Mount{{Type: "bind", Source: s.fsDir(snap.ParentIDs[0]), Options: []string{"ro", "rbind"}}}
	}
	lower := make([]string, len(snap.ParentIDs))
	for i, id := range snap.ParentIDs {
		lower[i] = s.fsDir(id)
	}
	var options []string
	if !ro {
		options = append(options, "workdir="+filepath.Join(s.dir(snap.ID), "work"), "upperdir="+s.fsDir(snap.ID))
	}
	options = append(options, "lowerdir="+strings.Join(lower, ":"))
	return []mount.Mount{{Type: "overlay", Source: "overlay", Options: options}}
}
