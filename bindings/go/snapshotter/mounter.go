package snapshotter

import (
	"context"
	"io"
	"sync"

	"github.com/containerd/log"

	estargz "github.com/estargz-rs/estargz-rs/bindings/go"
)

// LayerMounter mounts registry layers with the estargz bindings.
type LayerMounter struct {
	// Options apply to every mount (Config.MountOptions).
	Options []estargz.MountOption
}

// Mount mounts layer at mountpoint, checking its TOC digest against the
// label containerd forwarded as well as the manifest's annotation.
func (m LayerMounter) Mount(ctx context.Context, layer Layer, mountpoint string) (io.Closer, error) {
	opts := append([]estargz.MountOption{
		estargz.WithRemote(estargz.WithLayerDigest(layer.Digest)),
	}, m.Options...)
	if layer.TOCDigest != "" {
		opts = append(opts, estargz.WithMountExpectedTOCDigest(layer.TOCDigest))
	}
	return estargz.Mount(ctx, layer.Ref, mountpoint, opts...)
}

// OpenAhead starts opening layer and the following layers its labels name
// (estargz.MountOpenAhead) with the mounts' options, and returns at once;
// their mounts then claim the opens.
func (m LayerMounter) OpenAhead(_ context.Context, layer Layer) error {
	digests := aheadDigests(layer)
	if len(digests) == 0 {
		return nil
	}
	n, err := estargz.MountOpenAhead(layer.Ref, digests, m.Options...)
	if err == nil && n > 0 {
		log.L.Debugf("opening %d layers of %s ahead", n, layer.Ref)
	}
	return err
}

// ReloadableMounter is a LayerMounter whose options can be replaced while
// it serves (SIGHUP reloads the registry settings): later mounts use the
// new options, mounts already made keep the registry client they were
// made with (the C ABI has no way to change a mount's).
type ReloadableMounter struct {
	mu   sync.RWMutex
	opts []estargz.MountOption
}

// NewReloadableMounter mounts with opts until SetOptions.
func NewReloadableMounter(opts []estargz.MountOption) *ReloadableMounter {
	return &ReloadableMounter{opts: opts}
}

// SetOptions replaces the options of later mounts.
func (m *ReloadableMounter) SetOptions(opts []estargz.MountOption) {
	m.mu.Lock()
	m.opts = opts
	m.mu.Unlock()
}

// Mount mounts with the current options (see LayerMounter.Mount).
func (m *ReloadableMounter) Mount(ctx context.Context, layer Layer, mountpoint string) (io.Closer, error) {
	m.mu.RLock()
	opts := m.opts
	m.mu.RUnlock()
	return LayerMounter{Options: opts}.Mount(ctx, layer, mountpoint)
}

// OpenAhead opens layers ahead with the current options (see
// LayerMounter.OpenAhead).
func (m *ReloadableMounter) OpenAhead(ctx context.Context, layer Layer) error {
	m.mu.RLock()
	opts := m.opts
	m.mu.RUnlock()
	return LayerMounter{Options: opts}.OpenAhead(ctx, layer)
}
