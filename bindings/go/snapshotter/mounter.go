package snapshotter

import (
	"context"
	"io"

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
