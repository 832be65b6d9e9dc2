#!/usr/bin/env python3
"""Open N idle HTTP/1.1 keep-alive connections to HOST:PORT and hold them.

Each connection sends one complete request (``GET PATH HTTP/1.1``), reads the
whole response (Content-Length or chunked body) and is then left open and idle,
so the server sees N established keep-alive HTTP connections rather than N
half-open TCP sockets.

Prints ``ready N`` on stdout once every connection has completed its request.
Then it holds the connections until told to stop:

  --hold stdin   (default) until stdin reaches EOF
  --hold signal  until SIGTERM / SIGINT

On stop it prints how many connections were still open (not closed by the
server) as ``still-open M`` and exits 0.  Exits 1 if any connection could not
be opened or got a non-2xx response, or if the server did not keep it alive.

Example:
  python3 bench/idle_conns.py --hold signal 127.0.0.1 8080 1000
"""

import argparse
import resource
import signal
import socket
import sys
import time


def die(msg):
    print(f"idle_conns: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def read_response(sock, deadline):
    """Read one full HTTP/1.1 response. Returns (status, headers dict)."""
    buf = b""

    def fill():
        nonlocal buf
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out reading response")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by server mid-response")
        buf += chunk

    while b"\r\n\r\n" not in buf:
        fill()
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError(f"bad status line: {lines[0]!r}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()

    te = headers.get("transfer-encoding", "").lower()
    if "chunked" in te:
        # Read chunks until the terminating zero-size chunk and trailers.
        while True:
            while b"\r\n" not in buf:
                fill()
            size_line, buf = buf.split(b"\r\n", 1)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                # Trailers (possibly none) end with an empty line.
                while not (buf.startswith(b"\r\n") or b"\r\n\r\n" in buf):
                    fill()
                break
            while len(buf) < size + 2:
                fill()
            buf = buf[size + 2:]
    elif "content-length" in headers:
        length = int(headers["content-length"])
        while len(buf) < length:
            fill()
    elif status in (204, 304) or 100 <= status < 200:
        pass
    else:
        raise ValueError("response has neither Content-Length nor chunked body "
                         "(server would have to close the connection)")
    return status, headers


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n + 64
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < want:
            die(f"RLIMIT_NOFILE hard limit {hard} too low for {n} connections")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int, nargs="?", default=1000)
    ap.add_argument("--path", default="/")
    ap.add_argument("--header", action="append", default=[],
                    help="extra request header 'Name: value' (repeatable)")
    ap.add_argument("--hold", choices=("stdin", "signal"), default="stdin")
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="seconds allowed per connection for connect+response")
    args = ap.parse_args()

    raise_nofile(args.count)

    extra = "".join(f"{h}\r\n" for h in args.header)
    request = (f"GET {args.path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").encode()

    socks = []
    for i in range(args.count):
        deadline = time.monotonic() + args.timeout
        try:
            s = socket.create_connection((args.host, args.port), timeout=args.timeout)
            s.sendall(request)
            status, headers = read_response(s, deadline)
        except Exception as e:  # noqa: BLE001
            die(f"connection {i}: {type(e).__name__}: {e}")
        if not 200 <= status < 300:
            die(f"connection {i}: got HTTP {status}")
        if "close" in headers.get("connection", "").lower():
            die(f"connection {i}: server answered 'Connection: close' (no keep-alive)")
        s.setblocking(False)
        socks.append(s)

    print(f"ready {len(socks)}", flush=True)

    class Stop(Exception):
        pass

    def on_signal(signum, frame):
        raise Stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        if args.hold == "stdin":
            # read() blocks until EOF (or a signal raises Stop).
            while sys.stdin.buffer.read(4096):
                pass
        else:
            while True:
                time.sleep(3600)
    except Stop:
        pass
    # Don't let a second signal interrupt the final report.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    # Count connections the server has not closed (a readable socket with EOF
    # or an error means the server dropped it while it was supposed to idle).
    still_open = 0
    for s in socks:
        try:
            data = s.recv(1)
            if data:
                still_open += 1  # unexpected data, but still open
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
        s.close()
    print(f"still-open {still_open}", flush=True)


if __name__ == "__main__":
    main()
