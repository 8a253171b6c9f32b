package estargz_test

// Production registry settings through the bindings (the snapshotter's
// path: Go options → C ABI setters → the core), against Debian's
// docker-registry: containerd hosts.toml mirrors with a pull-through
// cache, a private CA from hosts.toml, and a credential helper.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	estargz "github.com/estargz-rs/estargz-rs/bindings/go"
)

const dockerRegistryBin = "/usr/bin/docker-registry"

// A bcrypt hash of testPassword (htpasswd's format; docker-registry
// accepts only bcrypt, which the standard library lacks).
const (
	testUser     = "estargz"
	testPassword = "s3cret"
	testHtpasswd = "estargz:$2b$04$2aRujQkNk94CUc7iU5SFmuhsMMDjImuILz1.2woc0/eUO8rtkcFmm\n"
)

// dockerRegistry is one docker-registry process on 127.0.0.1.
type dockerRegistry struct {
	t      *testing.T
	dir    string
	addr   string
	scheme string
	client *http.Client
	user   bool
	cmd    *exec.Cmd
}

type dockerRegistryConfig struct {
	proxy     string // remote URL: a pull-through cache of it
	cert, key string // TLS
	clientCA  string // TLS client certificates required, from this CA
	htpasswd  bool
	client    *http.Client // for pushes (TLS trust)
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startDockerRegistry(t *testing.T, c dockerRegistryConfig) *dockerRegistry {
	t.Helper()
	if _, err := os.Stat(dockerRegistryBin); err != nil {
		t.Fatalf("%s: install Debian's docker-registry package (.ci/run does)", dockerRegistryBin)
	}
	r := &dockerRegistry{t: t, dir: t.TempDir(), addr: freePort(t), scheme: "http", client: http.DefaultClient}
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"+
		"storage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(r.dir, "data"), r.addr)
	if c.cert != "" {
		cfg += fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", c.cert, c.key)
		if c.clientCA != "" {
			cfg += fmt.Sprintf("    clientcas:\n      - %s\n", c.clientCA)
		}
		r.scheme = "https"
	}
	if c.htpasswd {
		pw := filepath.Join(r.dir, "htpasswd")
		writeFile(t, pw, testHtpasswd)
		cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: estargz-test\n    path: %s\n", pw)
		r.user = true
	}
	if c.proxy != "" {
		cfg += fmt.Sprintf("proxy:\n  remoteurl: %s\n", c.proxy)
	}
	if c.client != nil {
		r.client = c.client
	}
	writeFile(t, filepath.Join(r.dir, "config.yml"), cfg)
	r.start()
	t.Cleanup(r.stop)
	return r
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (r *dockerRegistry) start() {
	r.t.Helper()
	log, err := os.Create(filepath.Join(r.dir, "registry.log"))
	if err != nil {
		r.t.Fatal(err)
	}
	defer log.Close()
	r.cmd = exec.Command(dockerRegistryBin, "serve", filepath.Join(r.dir, "config.yml"))
	r.cmd.Stdout, r.cmd.Stderr = log, log
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", r.addr); err == nil {
			c.Close()
			return
		}
	}
	out, _ := os.ReadFile(filepath.Join(r.dir, "registry.log"))
	r.t.Fatalf("docker-registry did not listen on %s: %s", r.addr, out)
}

func (r *dockerRegistry) stop() {
	if r.cmd != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

func (r *dockerRegistry) url() string { return r.scheme + "://" + r.addr }

func (r *dockerRegistry) do(method, url, ctype string, body []byte, want int) *http.Response {
	r.t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if r.user {
		req.SetBasicAuth(testUser, testPassword)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		r.t.Fatalf("%s %s: HTTP %d, want %d", method, url, resp.StatusCode, want)
	}
	return resp
}

// push uploads what an in-memory registry holds (see registry.push) as
// test/app.
func (r *dockerRegistry) push(from *registry) {
	r.t.Helper()
	base := r.url() + "/v2/test/app/"
	for digest, data := range from.blobs {
		resp := r.do("POST", base+"blobs/uploads/", "", nil, http.StatusAccepted)
		loc, err := resp.Location()
		if err != nil {
			r.t.Fatal(err)
		}
		sep := "?"
		if loc.RawQuery != "" {
			sep = "&"
		}
		r.do("PUT", loc.String()+sep+"digest="+digest, "application/octet-stream", data, http.StatusCreated)
	}
	for tag, m := range from.manifests {
		r.do("PUT", base+"manifests/"+tag, "application/vnd.oci.image.manifest.v1+json", m, http.StatusCreated)
	}
}

// registryImage builds a two-file layer image in an in-memory registry.
func registryImage(t *testing.T) (*registry, *estargz.Blob, map[string]string) {
	files := append(fixture(), reg("srv/data.txt", strings.Repeat("production registries\n", 5000)))
	b, err := estargz.Build(bytes.NewReader(makeTar(t, files)), estargz.WithChunkSize(16<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	mem := newRegistry()
	mem.push(t, "v1", true, b)
	return mem, b, contents(files)
}

func openAndCheck(t *testing.T, ref string, want map[string]string, opts ...estargz.RemoteOption) error {
	t.Helper()
	r, err := estargz.OpenRemote(context.Background(), ref, opts...)
	if err != nil {
		return err
	}
	defer r.Close()
	checkContents(t, r, want)
	return nil
}

// waitCached waits until a docker-registry pull-through cache has stored
// the blobs (it fetches them from its remote in the background).
func (r *dockerRegistry) waitCached(digests ...string) {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, d := range digests {
		hex := strings.TrimPrefix(d, "sha256:")
		p := filepath.Join(r.dir, "data/docker/registry/v2/blobs/sha256", hex[:2], hex, "data")
		for {
			if _, err := os.Stat(p); err == nil {
				break
			}
			if time.Now().After(deadline) {
				r.t.Fatalf("the mirror never cached %s", d)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func TestHostsTomlMirror(t *testing.T) {
	mem, layer, want := registryImage(t)
	origin := startDockerRegistry(t, dockerRegistryConfig{})
	origin.push(mem)
	mirror := startDockerRegistry(t, dockerRegistryConfig{proxy: origin.url()})
	// Clients reach the origin through a proxy that counts their requests
	// and the hosts.toml header they carry; the mirror talks to the origin
	// directly.
	var requests, withHeader atomic.Int64
	originURL, err := url.Parse(origin.url())
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(originURL)
	counted := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		requests.Add(1)
		if req.Header.Get("X-Estargz-Test") == "origin" {
			withHeader.Add(1)
		}
		rp.ServeHTTP(w, req)
	}))
	defer counted.Close()
	// The image is named after a host nobody listens on: only hosts.toml
	// says where it is (server = the origin, a mirror before it).
	name := "registry.invalid:5000"
	hosts := t.TempDir()
	writeFile(t, filepath.Join(hosts, name, "hosts.toml"), fmt.Sprintf(
		"server = %q\n[header]\n  x-estargz-test = \"origin\"\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n",
		counted.URL, mirror.url()))
	ref := name + "/test/app:v1"
	opts := []estargz.RemoteOption{estargz.WithHostsDir(hosts), estargz.WithRetries(1),
		estargz.WithRequestTimeout(5 * time.Second)}

	// Both up: the mirror serves everything; the origin is not asked.
	if err := openAndCheck(t, ref, want, opts...); err != nil {
		t.Fatal(err)
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("the origin was asked %d times with the mirror up", n)
	}
	// Opening a layer reads the manifest and the layer, not the config.
	mirror.waitCached(layer.Digest())
	// Origin down: everything still comes from the mirror's cache.
	origin.stop()
	if err := openAndCheck(t, ref, want, opts...); err != nil {
		t.Fatalf("with the origin stopped (reads must come from the mirror): %v", err)
	}
	// Mirror down, origin back: the origin.
	mirror.stop()
	origin.start()
	if err := openAndCheck(t, ref, want, opts...); err != nil {
		t.Fatalf("with the mirror stopped: %v", err)
	}
	if n, h := requests.Load(), withHeader.Load(); n == 0 || h != n {
		t.Fatalf("origin: %d requests, %d with the hosts.toml header", n, h)
	}
	// Both down: the error names both.
	origin.stop()
	err = openAndCheck(t, ref, want, opts...)
	if err == nil || !strings.Contains(err.Error(), mirror.addr) || !strings.Contains(err.Error(), counted.Listener.Addr().String()) {
		t.Fatalf("both down: %v", err)
	}
	// A mirror without pull/resolve is not used: the origin alone (down).
	writeFile(t, filepath.Join(hosts, name, "hosts.toml"), fmt.Sprintf(
		"server = %q\n[host.%q]\n  capabilities = [\"push\"]\n", counted.URL, mirror.url()))
	err = openAndCheck(t, ref, want, opts...)
	if err == nil || strings.Contains(err.Error(), mirror.addr) {
		t.Fatalf("push-only mirror: %v", err)
	}
}

// makeCA returns a CA, a server certificate for 127.0.0.1 and a client
// certificate signed by it, as PEM files in dir.
func makeCA(t *testing.T, dir string) (caFile, certFile, keyFile, clientCert, clientKey string) {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey, srvKey, cliKey := key(), key(), key()
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "estargz test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caTmpl, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cliTmpl := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "estargz test client"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	cliDER, err := x509.CreateCertificate(rand.Reader, cliTmpl, caTmpl, &cliKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	cliKeyDER, err := x509.MarshalPKCS8PrivateKey(cliKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})))
		return p
	}
	return write("ca.crt", "CERTIFICATE", caDER), write("server.crt", "CERTIFICATE", srvDER),
		write("server.key", "PRIVATE KEY", keyDER), write("client.crt", "CERTIFICATE", cliDER),
		write("client.key", "PRIVATE KEY", cliKeyDER)
}

func TestHostsTomlCA(t *testing.T) {
	mem, _, want := registryImage(t)
	caFile, cert, key, clientCert, clientKey := makeCA(t, t.TempDir())
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(caFile)
	if err != nil || !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("CA: %v", err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	srv := startDockerRegistry(t, dockerRegistryConfig{cert: cert, key: key, client: client})
	srv.push(mem)
	ref := srv.addr + "/test/app:v1"
	hosts := t.TempDir()
	opts := []estargz.RemoteOption{estargz.WithHostsDir(hosts), estargz.WithRetries(0),
		// No certs.d of the machine's may make the CA trusted by accident.
		estargz.WithCertsDir(t.TempDir())}

	// Without the CA: the error says the certificate is not trusted.
	err = openAndCheck(t, ref, want, opts...)
	if err == nil || !strings.Contains(err.Error(), "not trusted") {
		t.Fatalf("without the CA: %v", err)
	}
	// hosts.toml's ca (relative to its directory) for the server.
	writeFile(t, filepath.Join(hosts, srv.addr, "hosts.toml"), "ca = \"my-ca.pem\"\n")
	writeFile(t, filepath.Join(hosts, srv.addr, "my-ca.pem"), string(caPEM))
	if err := openAndCheck(t, ref, want, opts...); err != nil {
		t.Fatalf("with hosts.toml ca: %v", err)
	}
	// skip_verify works too; a missing CA file is an error naming it.
	writeFile(t, filepath.Join(hosts, srv.addr, "hosts.toml"), "skip_verify = true\n")
	if err := openAndCheck(t, ref, want, opts...); err != nil {
		t.Fatalf("with skip_verify: %v", err)
	}
	writeFile(t, filepath.Join(hosts, srv.addr, "hosts.toml"), "ca = \"missing.pem\"\n")
	err = openAndCheck(t, ref, want, opts...)
	if err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("missing CA file: %v", err)
	}

	// A registry that wants a client certificate: hosts.toml's client.
	pair, err := tls.LoadX509KeyPair(clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	mtlsClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
	mtls := startDockerRegistry(t, dockerRegistryConfig{cert: cert, key: key, clientCA: caFile, client: mtlsClient})
	mtls.push(mem)
	ref = mtls.addr + "/test/app:v1"
	writeFile(t, filepath.Join(hosts, mtls.addr, "hosts.toml"), "ca = \"my-ca.pem\"\n")
	writeFile(t, filepath.Join(hosts, mtls.addr, "my-ca.pem"), string(caPEM))
	if err := openAndCheck(t, ref, want, opts...); err == nil {
		t.Fatal("a client-certificate registry answered without one")
	}
	writeFile(t, filepath.Join(hosts, mtls.addr, "hosts.toml"), fmt.Sprintf(
		"ca = \"my-ca.pem\"\nclient = [[%q, %q]]\n", clientCert, clientKey))
	if err := openAndCheck(t, ref, want, opts...); err != nil {
		t.Fatalf("with hosts.toml client: %v", err)
	}
}

func TestCredentialHelper(t *testing.T) {
	mem, _, want := registryImage(t)
	srv := startDockerRegistry(t, dockerRegistryConfig{htpasswd: true})
	srv.push(mem)
	ref := srv.addr + "/test/app:v1"
	// docker-credential-<name> get: the server URL on stdin, JSON out.
	bin := t.TempDir()
	writeFile(t, filepath.Join(bin, "docker-credential-estargztest"), fmt.Sprintf(
		"#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread url\ncase \"$url\" in *%s*) ;; *) echo \"unknown $url\"; exit 1;; esac\n"+
			"printf '{\"ServerURL\":\"%%s\",\"Username\":\"%s\",\"Secret\":\"%s\"}' \"$url\"\n",
		srv.addr, testUser, testPassword))
	writeFile(t, filepath.Join(bin, "docker-credential-broken"), "#!/bin/sh\necho 'helper exploded' >&2\nexit 1\n")
	for _, f := range []string{"docker-credential-estargztest", "docker-credential-broken"} {
		if err := os.Chmod(filepath.Join(bin, f), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	auth := filepath.Join(t.TempDir(), "config.json")
	opts := []estargz.RemoteOption{estargz.WithPlainHTTP(), estargz.WithAuthFile(auth), estargz.WithRetries(0)}

	writeFile(t, auth, fmt.Sprintf(`{"credHelpers": {%q: "estargztest"}}`, srv.addr))
	if err := openAndCheck(t, ref, want, opts...); err != nil {
		t.Fatalf("through the helper: %v", err)
	}
	writeFile(t, auth, fmt.Sprintf(`{"credHelpers": {%q: "broken"}}`, srv.addr))
	err := openAndCheck(t, ref, want, opts...)
	if err == nil || !strings.Contains(err.Error(), "docker-credential-broken") {
		t.Fatalf("failing helper: %v", err)
	}
	// No credentials: refused.
	writeFile(t, auth, `{}`)
	if err := openAndCheck(t, ref, want, opts...); err == nil {
		t.Fatal("anonymous access to an htpasswd registry worked")
	}
}

// A mirror that accepts connections and never answers costs its timeout
// once, not on every read: it is tried last while it is in back-off.
func TestDeadMirrorBackoff(t *testing.T) {
	mem, _, want := registryImage(t)
	origin := startDockerRegistry(t, dockerRegistryConfig{})
	origin.push(mem)
	// Connections complete in the kernel's backlog; nothing reads them.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	hosts := t.TempDir()
	writeFile(t, filepath.Join(hosts, origin.addr, "hosts.toml"), fmt.Sprintf(
		"server = %q\n[host.\"http://%s\"]\n", origin.url(), dead.Addr()))
	const timeout = 300 * time.Millisecond
	opts := []estargz.RemoteOption{estargz.WithHostsDir(hosts), estargz.WithRequestTimeout(timeout),
		estargz.WithRetries(1), estargz.WithPrefetch(false)}
	ref := origin.addr + "/test/app:v1"
	read := func() time.Duration {
		start := time.Now()
		if err := openAndCheck(t, ref, want, opts...); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	// The first read waits for the mirror (two attempts, each a timeout).
	first := read()
	if first < 2*timeout {
		t.Fatalf("the first read took %v: the dead mirror was not tried", first)
	}
	const n = 10
	start := time.Now()
	for range n {
		read()
	}
	rest := time.Since(start)
	t.Logf("first read %v; %d more reads %v", first, n, rest)
	// Without back-off every read would wait for the mirror on each of its
	// requests (manifest, config, blob): over n*3*2*timeout. With it, at
	// most a re-probe or two when a back-off period ends.
	if rest > n*timeout {
		t.Fatalf("%d reads took %v with a dead mirror (first read %v)", n, rest, first)
	}
}
