package main

// pull: a partial (zstd:chunked) pull of a local blob into a throwaway
// containers/storage store, then the layer's export, whose digest is the
// DiffID containers/storage reproduces from the tar-split and the files.

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/containers/storage"
	graphdriver "github.com/containers/storage/drivers"
	"github.com/containers/storage/pkg/archive"
	"github.com/containers/storage/pkg/chunked"
	"github.com/containers/storage/types"
	"github.com/opencontainers/go-digest"
)

// fileSource serves GetBlobAt from a local file, as a registry serves
// multi-range requests.
type fileSource struct{ f *os.File }

func (s fileSource) GetBlobAt(chunks []chunked.ImageSourceChunk) (chan io.ReadCloser, chan error, error) {
	streams := make(chan io.ReadCloser)
	errs := make(chan error)
	go func() {
		defer close(streams)
		defer close(errs)
		for _, c := range chunks {
			streams <- io.NopCloser(io.NewSectionReader(s.f, int64(c.Offset), int64(c.Length)))
		}
	}()
	return streams, errs, nil
}

func runPull(args []string) error {
	root, err := os.MkdirTemp("", "cstorage-pull-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	// Errors name the store as <store>, so two pulls' errors compare equal.
	if err := pull(args, root); err != nil {
		return errors.New(strings.ReplaceAll(err.Error(), root, "<store>"))
	}
	return nil
}

func pull(args []string, root string) error {
	fs := flag.NewFlagSet("pull", flag.ExitOnError)
	annotationsPath := fs.String("annotations", "", "the layer descriptor's annotations, a JSON object")
	_ = fs.Parse(args)
	if *annotationsPath == "" || fs.NArg() != 1 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	raw, err := os.ReadFile(*annotationsPath)
	if err != nil {
		return err
	}
	var annotations map[string]string
	if err := json.Unmarshal(raw, &annotations); err != nil {
		return fmt.Errorf("%s: %w", *annotationsPath, err)
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	blobDigest, err := digest.FromReader(io.NewSectionReader(f, 0, st.Size()))
	if err != nil {
		return err
	}

	store, err := storage.GetStore(types.StoreOptions{
		RunRoot:         root + "/run",
		GraphRoot:       root + "/graph",
		GraphDriverName: "overlay",
		PullOptions:     map[string]string{"enable_partial_images": "true"},
	})
	if err != nil {
		return fmt.Errorf("opening a store: %w", err)
	}
	defer func() { _, _ = store.Shutdown(true) }()

	differ, err := chunked.GetDiffer(context.Background(), store, blobDigest, st.Size(), annotations, fileSource{f})
	if err != nil {
		return fmt.Errorf("GetDiffer: %w", err)
	}
	opts := &graphdriver.ApplyDiffWithDifferOpts{}
	out, err := store.ApplyDiffWithDiffer("", opts, differ)
	if err != nil {
		return fmt.Errorf("ApplyDiffWithDiffer: %w", err)
	}
	layer, err := store.ApplyStagedLayer(storage.ApplyStagedLayerOptions{
		ID:          "pulled",
		DiffOutput:  out,
		DiffOptions: opts,
	})
	if err != nil {
		_ = store.CleanupStagedLayer(out)
		return fmt.Errorf("ApplyStagedLayer: %w", err)
	}
	uncompressed := archive.Uncompressed
	diff, err := store.Diff("", layer.ID, &storage.DiffOptions{Compression: &uncompressed})
	if err != nil {
		return fmt.Errorf("Diff: %w", err)
	}
	defer diff.Close()
	h := sha256.New()
	if _, err := io.Copy(h, diff); err != nil {
		return fmt.Errorf("reading the export: %w", err)
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"diffID":    fmt.Sprintf("sha256:%x", h.Sum(nil)),
		"tocDigest": out.TOCDigest.String(),
		"files":     len(out.Artifacts),
	})
}
