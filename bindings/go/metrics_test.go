package estargz_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	estargz "github.com/estargz-rs/estargz-rs/bindings/go"
)

// scrapeMetrics sends GET /metrics over conn and parses the answer into
// sample → value.
func scrapeMetrics(t *testing.T, conn net.Conn) map[string]float64 {
	t.Helper()
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %v, %v", resp.Status, err)
	}
	return parseMetrics(t, string(body))
}

func parseMetrics(t *testing.T, text string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
		if strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("bad sample line %q", l)
		}
		out[l[:i]] = v
	}
	return out
}

// The library's endpoint counts what a lazy read fetched: the requests
// and body bytes the registry itself counted.
func TestServeMetricsCountsRegistryTraffic(t *testing.T) {
	handles := estargz.LiveHandles()
	mem, _, want := registryImage(t)
	var requests, bytesSent atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		requests.Add(1)
		mem.ServeHTTP(&countingWriter{ResponseWriter: w, n: &bytesSent}, req)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	sock := filepath.Join(t.TempDir(), "metrics.sock")
	unix, err := estargz.ServeMetrics(sock)
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := estargz.ServeMetrics("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if unix.Address() != sock || !strings.HasPrefix(tcp.Address(), "127.0.0.1:") || tcp.Address() == "127.0.0.1:0" {
		t.Fatalf("addresses %q, %q", unix.Address(), tcp.Address())
	}
	// The port is taken while served.
	if _, err := estargz.ServeMetrics(tcp.Address()); !errors.Is(err, estargz.ErrIO) {
		t.Fatalf("a second server on %s: %v", tcp.Address(), err)
	}

	r, err := estargz.OpenRemote(context.Background(), host+"/test/app:v1", estargz.WithPlainHTTP(), estargz.WithPrefetch(false))
	if err != nil {
		t.Fatal(err)
	}
	checkContents(t, r, want)
	r.Close()

	reqKey := fmt.Sprintf("estargz_registry_requests_total{host=%q}", host)
	bytesKey := fmt.Sprintf("estargz_registry_response_bytes_total{host=%q}", host)
	// The server counts a body as it writes it, the library as it reads it.
	var m map[string]float64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		m = scrapeMetrics(t, c)
		if int64(m[reqKey]) == requests.Load() && int64(m[bytesKey]) == bytesSent.Load() || time.Now().After(deadline) {
			break
		}
	}
	if int64(m[reqKey]) != requests.Load() || int64(m[bytesKey]) != bytesSent.Load() || requests.Load() < 3 {
		t.Fatalf("metrics say %v requests, %v bytes; the registry saw %d, %d",
			m[reqKey], m[bytesKey], requests.Load(), bytesSent.Load())
	}
	t.Logf("%d requests, %d body bytes: the same on both sides", requests.Load(), bytesSent.Load())
	if m[`estargz_layers_total{result="ok"}`] < 1 {
		t.Fatalf("no layer counted as opened: %v", m)
	}
	// Over TCP and rendered in process: the same families.
	c, err := net.Dial("tcp", tcp.Address())
	if err != nil {
		t.Fatal(err)
	}
	if got := scrapeMetrics(t, c); got[reqKey] != m[reqKey] {
		t.Fatalf("over TCP: %v requests, want %v", got[reqKey], m[reqKey])
	}
	text, err := estargz.RenderMetrics()
	if err != nil {
		t.Fatal(err)
	}
	if got := parseMetrics(t, text); got[bytesKey] != m[bytesKey] || !strings.Contains(text, "# TYPE estargz_fetch_duration_seconds histogram\n") {
		t.Fatalf("RenderMetrics: %v bytes, want %v\n%s", got[bytesKey], m[bytesKey], text)
	}

	// Closed: the socket file is gone, the port refuses.
	unix.Close()
	tcp.Close()
	unix.Close()
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file after Close: %v", err)
	}
	if c, err := net.Dial("tcp", tcp.Address()); err == nil {
		c.Close()
		t.Fatal("the TCP port still answers after Close")
	}
	for _, bad := range []string{"localhost", "", "127.0.0.1:0\x00x"} {
		if _, err := estargz.ServeMetrics(bad); !errors.Is(err, estargz.ErrInvalidArgument) {
			t.Errorf("ServeMetrics(%q): %v, want an invalid argument", bad, err)
		}
	}
	if n := estargz.LiveHandles(); n != handles {
		t.Fatalf("%d live handles, want %d", n, handles)
	}
}
