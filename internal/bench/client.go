package bench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"
)

// client is one keep-alive HTTP/1.1 connection that posts deliveries. It is
// a minimal client on purpose: net/http's client costs the shared 2-CPU
// machine as much CPU per request as the servers it measures, which would
// blur the comparison. It understands what the targets answer:
// Content-Length, chunked and no-body responses, and Connection: close.
// Not safe for concurrent use: each worker has its own.
type client struct {
	addr, host, path string
	timeout          time.Duration
	conn             net.Conn
	br               *bufio.Reader
	bw               *bufio.Writer
	num              []byte
}

func newClient(rawURL string, timeout time.Duration) (*client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("parse url: %w", err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("url %s: only http is supported", rawURL)
	}
	path := u.RequestURI()
	return &client{addr: u.Host, host: u.Host, path: path, timeout: timeout}, nil
}

// post sends body with the signature header and returns the answer's
// status, having read the answer in full. On an error the connection is
// closed and the next post dials again.
func (c *client) post(sig string, body []byte) (int, error) {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
		if err != nil {
			return 0, fmt.Errorf("dial: %w", err)
		}
		c.conn, c.br, c.bw = conn, bufio.NewReaderSize(conn, 4096), bufio.NewWriterSize(conn, 4096)
	}
	code, keep, err := c.roundTrip(sig, body)
	if err != nil || !keep {
		c.close()
	}
	return code, err
}

func (c *client) close() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
}

func (c *client) roundTrip(sig string, body []byte) (code int, keep bool, err error) {
	if err := c.conn.SetDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, false, err
	}
	// Writes to a bufio.Writer keep their first error for Flush to report.
	w := c.bw
	_, _ = w.WriteString("POST ")
	_, _ = w.WriteString(c.path)
	_, _ = w.WriteString(" HTTP/1.1\r\nHost: ")
	_, _ = w.WriteString(c.host)
	_, _ = w.WriteString("\r\nContent-Type: application/json\r\n" + SignatureHeader + ": ")
	_, _ = w.WriteString(sig)
	_, _ = w.WriteString("\r\nContent-Length: ")
	c.num = strconv.AppendInt(c.num[:0], int64(len(body)), 10)
	_, _ = w.Write(c.num)
	_, _ = w.WriteString("\r\n\r\n")
	_, _ = w.Write(body)
	if err := w.Flush(); err != nil {
		return 0, false, fmt.Errorf("write request: %w", err)
	}

	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return 0, false, fmt.Errorf("read status line: %w", err)
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, false, fmt.Errorf("bad status line %q", line)
	}
	code, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, fmt.Errorf("bad status line %q", line)
	}
	length, chunked, keep := int64(-1), false, true
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return code, false, fmt.Errorf("read header: %w", err)
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			length, err = strconv.ParseInt(string(v), 10, 64)
			if err != nil || length < 0 {
				return code, false, fmt.Errorf("bad Content-Length %q", v)
			}
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(v, []byte("chunked"))
		case bytes.EqualFold(k, []byte("Connection")):
			keep = !bytes.EqualFold(v, []byte("close"))
		}
	}
	switch {
	case code == 204 || code == 304 || code/100 == 1:
	case chunked:
		if err := c.discardChunked(); err != nil {
			return code, false, err
		}
	case length >= 0:
		if _, err := c.br.Discard(int(length)); err != nil {
			return code, false, fmt.Errorf("read body: %w", err)
		}
	default: // the body ends with the connection
		_, _ = io.Copy(io.Discard, c.br)
		keep = false
	}
	return code, keep, nil
}

func (c *client) discardChunked() error {
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("read chunk size: %w", err)
		}
		sz, _, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(";"))
		n, err := strconv.ParseInt(string(sz), 16, 64)
		if err != nil || n < 0 {
			return errors.New("bad chunk size")
		}
		if n == 0 {
			for { // trailers, up to the blank line
				line, err := c.br.ReadSlice('\n')
				if err != nil {
					return fmt.Errorf("read trailer: %w", err)
				}
				if len(bytes.TrimRight(line, "\r\n")) == 0 {
					return nil
				}
			}
		}
		if _, err := c.br.Discard(int(n) + 2); err != nil {
			return fmt.Errorf("read chunk: %w", err)
		}
	}
}
