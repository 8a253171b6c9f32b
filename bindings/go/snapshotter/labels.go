package snapshotter

import "strings"

// Labels containerd forwards to a proxy snapshotter (only those with the
// "containerd.io/snapshot/" prefix, and the target reference, pass).
const (
	// LabelTargetRef is set by containerd's unpacker to the chain ID the
	// prepared snapshot will be committed as.
	LabelTargetRef = "containerd.io/snapshot.ref"
	// LabelRemote marks a snapshot whose content is a mounted remote layer.
	LabelRemote = "containerd.io/snapshot/remote"
	// LabelTOCDigest is the layer annotation with the TOC digest, forwarded
	// as a label because of its prefix.
	LabelTOCDigest = "containerd.io/snapshot/stargz/toc.digest"

	// Set by the CRI plugin (with disable_snapshot_annotations = false).
	LabelCRIImageRef    = "containerd.io/snapshot/cri.image-ref"
	LabelCRILayerDigest = "containerd.io/snapshot/cri.layer-digest"
	LabelCRIImageLayers = "containerd.io/snapshot/cri.image-layers"

	// Set by `ctr-remote images rpull`.
	LabelStargzRef    = "containerd.io/snapshot/remote/stargz.reference"
	LabelStargzDigest = "containerd.io/snapshot/remote/stargz.digest"
	LabelStargzLayers = "containerd.io/snapshot/remote/stargz.layers"
)

// remoteLabelValue is the value upstream stores (any non-empty value marks
// the snapshot remote).
const remoteLabelValue = "remote snapshot"

// Layer names one layer of an image in a registry, as the labels of a
// Prepare describe it.
type Layer struct {
	// Ref is the image reference ("host/repo:tag" or "@digest").
	Ref string
	// Digest is the layer's blob digest.
	Digest string
	// TOCDigest is the expected TOC digest ("" when the manifest has no
	// annotation).
	TOCDigest string
	// Layers are this and the following layers' digests, as far as the
	// label carried them (for prefetching the next ones; may be empty).
	Layers []string
}

// LayerFromLabels finds the layer a Prepare's labels describe: the CRI
// labels first, then those of `ctr-remote images rpull`. ok is false when
// neither names both an image and a layer digest.
func LayerFromLabels(labels map[string]string) (layer Layer, ok bool) {
	for _, keys := range [][3]string{
		{LabelCRIImageRef, LabelCRILayerDigest, LabelCRIImageLayers},
		{LabelStargzRef, LabelStargzDigest, LabelStargzLayers},
	} {
		ref, digest := labels[keys[0]], labels[keys[1]]
		if ref == "" || digest == "" {
			continue
		}
		layer = Layer{Ref: ref, Digest: digest, TOCDigest: labels[LabelTOCDigest]}
		for _, d := range strings.Split(labels[keys[2]], ",") {
			if d = strings.TrimSpace(d); d != "" {
				layer.Layers = append(layer.Layers, d)
			}
		}
		return layer, true
	}
	return Layer{}, false
}
