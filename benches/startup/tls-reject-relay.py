#!/usr/bin/env python3
"""tls-reject-relay.py UPSTREAM (host:port): listens on 127.0.0.1 (port
printed on stdout) and relays each connection to UPSTREAM, except
connections that open with a TLS handshake record (byte 0x16), which are
closed at once.

Why: Podman (containers/image) pings an "insecure" registry over https
first and falls back to http only when that fails. A plain-HTTP proxy that
waits for an HTTP header end never answers the TLS ClientHello, so every
`podman pull` would wait for the 10 s TLS handshake timeout. The bench puts
this relay in front of the fault proxy only when the proxy does not close
such a connection itself (startup-bench.sh probes it)."""
import socket
import sys
import threading

host, port = sys.argv[1].rsplit(":", 1)
upstream = (host, int(port))


def pump(src, dst):
    try:
        while data := src.recv(256 << 10):
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def serve(client):
    with client:
        try:
            first = client.recv(1, socket.MSG_PEEK)
        except OSError:
            return
        if not first or first[0] == 0x16:
            return
        try:
            up = socket.create_connection(upstream)
        except OSError:
            return
        with up:
            back = threading.Thread(target=pump, args=(up, client), daemon=True)
            back.start()
            pump(client, up)
            back.join()


listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(512)
print(f"127.0.0.1:{listener.getsockname()[1]}", flush=True)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
