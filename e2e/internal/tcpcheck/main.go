// Command tcpcheck moves a known stream of bytes over one TCP connection and proves it arrived
// intact, without iperf3. The end-to-end suites build it and run one side in each namespace.
//
//	tcpcheck serve -listen ADDR [-count N]        prints "listening ADDR", then per connection
//	                                              "received bytes=N sha256=HEX" (also sent back)
//	tcpcheck send -to ADDR -bytes N -seed S       sends N pseudo-random bytes from seed S, prints
//	                                              "sent bytes=N sha256=HEX" and the receiver's
//	                                              line; exits 1 when they differ
//	tcpcheck get -url URL                         HTTP GET; prints the body, exits 1 unless 200
//
// The bytes come from a ChaCha8 stream keyed by the seed, so any seed reproduces the stream.
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tcpcheck serve|send [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serveCmd(os.Args[2:])
	case "send":
		err = sendCmd(os.Args[2:])
	case "get":
		err = getCmd(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q (want serve, send or get)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcpcheck:", err)
		os.Exit(1)
	}
}

func serveCmd(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	listen := fs.String("listen", "", "address to listen on (host:port)")
	count := fs.Int("count", 1, "connections to serve before exiting (0: forever)")
	idle := fs.Duration("idle-timeout", 60*time.Second, "drop a connection idle this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Printf("listening %s\n", ln.Addr())
	return serve(ln, *count, *idle, os.Stdout)
}

// Result is what one side saw of a transfer.
type Result struct {
	Bytes  int64
	SHA256 string
}

func (r Result) String() string { return fmt.Sprintf("bytes=%d sha256=%s", r.Bytes, r.SHA256) }

func parseResult(s string) (Result, error) {
	var r Result
	_, err := fmt.Sscanf(strings.TrimSpace(s), "bytes=%d sha256=%s", &r.Bytes, &r.SHA256)
	return r, err
}

func serve(ln net.Listener, count int, idle time.Duration, out io.Writer) error {
	for i := 0; count == 0 || i < count; i++ {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		r, err := receive(c, idle)
		if err != nil {
			fmt.Fprintf(out, "error %v after %s\n", err, r)
			c.Close()
			continue
		}
		fmt.Fprintf(out, "received %s\n", r)
		fmt.Fprintf(c, "%s\n", r)
		c.Close()
	}
	return nil
}

// deadlineReader extends the connection's read deadline before each read, so only an idle
// connection times out.
type deadlineReader struct {
	c    net.Conn
	idle time.Duration
}

func (d deadlineReader) Read(p []byte) (int, error) {
	d.c.SetReadDeadline(time.Now().Add(d.idle))
	return d.c.Read(p)
}

func receive(c net.Conn, idle time.Duration) (Result, error) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, deadlineReader{c, idle}, make([]byte, 256<<10))
	return result(n, h), err
}

func result(n int64, h hash.Hash) Result {
	return Result{Bytes: n, SHA256: hex.EncodeToString(h.Sum(nil))}
}

func sendCmd(args []string) error {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	to := fs.String("to", "", "address to connect to (host:port)")
	n := fs.Int64("bytes", 100<<20, "bytes to send")
	seed := fs.Uint64("seed", 1, "seed of the pseudo-random stream")
	dialFor := fs.Duration("dial-timeout", 10*time.Second, "keep retrying the connection this long")
	timeout := fs.Duration("timeout", 120*time.Second, "limit for the whole transfer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sent, got, err := send(*to, *n, *seed, *dialFor, *timeout)
	fmt.Printf("sent %s\n", sent)
	if err != nil {
		return err
	}
	fmt.Printf("peer %s\n", got)
	if sent != got {
		return errors.New("receiver's byte count or checksum differs from what was sent")
	}
	return nil
}

// Stream returns the n-byte pseudo-random stream for seed.
func Stream(seed uint64, n int64) io.Reader {
	key := sha256.Sum256(binary.LittleEndian.AppendUint64([]byte("tcpcheck"), seed))
	return io.LimitReader(rand.NewChaCha8(key), n)
}

func send(addr string, n int64, seed uint64, dialFor, timeout time.Duration) (sent, got Result, err error) {
	c, err := dialRetry(addr, dialFor)
	if err != nil {
		return Result{SHA256: "-"}, Result{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	h := sha256.New()
	w, err := io.CopyBuffer(io.MultiWriter(c, h), Stream(seed, n), make([]byte, 256<<10))
	sent = result(w, h)
	if err != nil {
		return sent, got, fmt.Errorf("after %d bytes: %w", w, err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return sent, got, err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return sent, got, fmt.Errorf("reading the receiver's result: %w", err)
	}
	got, err = parseResult(line)
	return sent, got, err
}

func dialRetry(addr string, dialFor time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(dialFor)
	for {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// getCmd fetches a URL from inside a namespace (metrics endpoints listen on its loopback),
// so the suites need no curl.
func getCmd(args []string) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	url := fs.String("url", "", "URL to fetch")
	timeout := fs.Duration("timeout", 5*time.Second, "limit for the request")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c := &http.Client{Timeout: *timeout}
	resp, err := c.Get(*url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(os.Stdout, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", *url, resp.Status)
	}
	return nil
}
