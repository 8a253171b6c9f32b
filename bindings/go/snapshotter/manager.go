package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/containerd/log"

	estargz "github.com/estargz-rs/estargz-rs/bindings/go"
)

// The FUSE manager is a long-lived process that owns the layer mounts, so
// they outlive the snapshotter: a snapshotter that is killed or restarted
// leaves running containers' layers served, and the new one takes them
// back by asking the manager which mountpoints it serves. The two talk
// net/rpc over a unix socket under the root; the manager is the same
// binary, started by the snapshotter when none answers.

// MountArgs asks the manager to mount Layer at Mountpoint.
type MountArgs struct {
	Layer      Layer
	Mountpoint string
}

// ManagerService is the manager's RPC service.
type ManagerService struct {
	mounter Mounter
	// Where the manager serves metrics ("": nowhere).
	metricsAddress string
	mu             sync.Mutex
	mounts         map[string]io.Closer // mountpoint -> mount
}

// NewManagerService serves mounts made with mounter.
func NewManagerService(mounter Mounter) *ManagerService {
	return &ManagerService{mounter: mounter, mounts: map[string]io.Closer{}}
}

// MetricsAddress gives where the manager serves metrics ("": nowhere), so
// a snapshotter that finds a running manager can tell whether it serves
// what its own configuration asks for.
func (s *ManagerService) MetricsAddress(_ struct{}, reply *string) error {
	*reply = s.metricsAddress
	return nil
}

// Mount mounts a layer; a mountpoint it already serves is left as it is.
func (s *ManagerService) Mount(args MountArgs, _ *struct{}) error {
	s.mu.Lock()
	_, ok := s.mounts[args.Mountpoint]
	s.mu.Unlock()
	if ok {
		return nil
	}
	m, err := s.mounter.Mount(context.Background(), args.Layer, args.Mountpoint)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.mounts[args.Mountpoint] = m
	s.mu.Unlock()
	log.L.Infof("mounted layer %s of %s at %s", args.Layer.Digest, args.Layer.Ref, args.Mountpoint)
	return nil
}

// OpenAhead starts opening a layer and the following ones ahead of their
// mounts, here where the mounts happen (see AheadOpener); it returns at
// once. A mounter that cannot is no error.
func (s *ManagerService) OpenAhead(layer Layer, _ *struct{}) error {
	if a, ok := s.mounter.(AheadOpener); ok {
		return a.OpenAhead(context.Background(), layer)
	}
	return nil
}

// Unmount unmounts a mountpoint (an error while it is busy); one it does
// not serve is no error.
func (s *ManagerService) Unmount(mountpoint string, _ *struct{}) error {
	s.mu.Lock()
	m, ok := s.mounts[mountpoint]
	s.mu.Unlock()
	if !ok {
		return nil
	}
	if err := m.Close(); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.mounts, mountpoint)
	s.mu.Unlock()
	log.L.Infof("unmounted %s", mountpoint)
	return nil
}

// List gives the mountpoints served, sorted.
func (s *ManagerService) List(_ struct{}, reply *[]string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.mounts))
	for mp, m := range s.mounts {
		// One unmounted from outside is forgotten.
		if lm, ok := m.(*estargz.LayerMount); ok {
			if st, err := lm.Status(); err == nil && !st.Mounted {
				_ = lm.Close()
				delete(s.mounts, mp)
				continue
			}
		}
		out = append(out, mp)
	}
	sort.Strings(out)
	*reply = out
	return nil
}

// UnmountAll unmounts everything (the manager's graceful stop); busy mounts
// are reported and left.
func (s *ManagerService) UnmountAll() error {
	var mps []string
	if err := s.List(struct{}{}, &mps); err != nil {
		return err
	}
	var errs []error
	for _, mp := range mps {
		if err := s.Unmount(mp, nil); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}

// ServeMetrics serves the library's counters (those of this process's
// mounts) for Prometheus at address, the metrics_address setting; with
// address "" it serves nothing and returns a nil server, whose Close and
// Address ("") may still be called.
func ServeMetrics(address string) (*estargz.MetricsServer, error) {
	if address == "" {
		return nil, nil
	}
	m, err := estargz.ServeMetrics(address)
	if err != nil {
		return nil, fmt.Errorf("metrics_address: %w", err)
	}
	log.L.Infof("metrics at %s", m.Address())
	return m, nil
}

// ServeManager serves the manager on socket until ctx is done, then
// unmounts every layer. With a metricsAddress, the library's counters
// (those of this process's mounts) are served there for Prometheus.
func ServeManager(ctx context.Context, socket string, mounter Mounter, metricsAddress string) error {
	svc := NewManagerService(mounter)
	m, err := ServeMetrics(metricsAddress)
	if err != nil {
		return err
	}
	defer m.Close()
	svc.metricsAddress = m.Address()
	server := rpc.NewServer()
	if err := server.RegisterName("Manager", svc); err != nil {
		return err
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	l, err := net.Listen("unix", socket)
	if err != nil {
		return err
	}
	go server.Accept(l)
	log.L.Infof("FUSE manager serving on %s", socket)
	<-ctx.Done()
	l.Close()
	log.L.Info("FUSE manager stopping: unmounting every layer")
	return svc.UnmountAll()
}

// ManagerMounter mounts through a FUSE manager.
type ManagerMounter struct {
	client *rpc.Client
}

// DialManager connects to the manager at socket, waiting up to timeout
// for it to answer.
func DialManager(socket string, timeout time.Duration) (*ManagerMounter, error) {
	deadline := time.Now().Add(timeout)
	for {
		c, err := rpc.Dial("unix", socket)
		if err == nil {
			return &ManagerMounter{client: c}, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("FUSE manager at %s: %w", socket, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type managedMount struct {
	client     *rpc.Client
	mountpoint string
}

func (m managedMount) Close() error {
	return m.client.Call("Manager.Unmount", m.mountpoint, nil)
}

// Mount asks the manager to mount layer.
func (m *ManagerMounter) Mount(ctx context.Context, layer Layer, mountpoint string) (io.Closer, error) {
	call := m.client.Go("Manager.Mount", MountArgs{layer, mountpoint}, nil, nil)
	select {
	case <-call.Done:
		if call.Error != nil {
			return nil, call.Error
		}
		return managedMount{m.client, mountpoint}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// OpenAhead asks the manager to open layers ahead. It waits for the
// answer, which comes at once, so the opens are registered before the
// Mount that claims one is served (net/rpc serves calls concurrently).
func (m *ManagerMounter) OpenAhead(ctx context.Context, layer Layer) error {
	call := m.client.Go("Manager.OpenAhead", layer, nil, nil)
	select {
	case <-call.Done:
		return call.Error
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Mounted takes back a mount the manager still serves.
func (m *ManagerMounter) Mounted(_ context.Context, mountpoint string) (io.Closer, bool) {
	var mps []string
	if err := m.client.Call("Manager.List", struct{}{}, &mps); err != nil {
		return nil, false
	}
	i := sort.SearchStrings(mps, mountpoint)
	if i < len(mps) && mps[i] == mountpoint {
		return managedMount{m.client, mountpoint}, true
	}
	return nil, false
}

// MetricsAddress asks the manager where it serves metrics ("": nowhere).
func (m *ManagerMounter) MetricsAddress() (string, error) {
	var addr string
	err := m.client.Call("Manager.MetricsAddress", struct{}{}, &addr)
	return addr, err
}

// Close closes the connection (the mounts stay).
func (m *ManagerMounter) Close() error { return m.client.Close() }
