// Package natstest runs real, in-process NATS servers with JetStream for
// tests: loopback only, a random port, storage in the test's temp dir.
package natstest

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/datagrid-relay/relay/internal/embedded"
)

// Options returns server options for one JetStream server on a random
// loopback port, storing in dir.
func Options(dir string) *server.Options {
	return embedded.Options("127.0.0.1", server.RANDOM_PORT, dir)
}

// Start runs a server with opts (Options(t.TempDir()) when nil) and shuts
// it down when the test ends.
func Start(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	if opts == nil {
		opts = Options(t.TempDir())
	}
	s, err := embedded.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Port is the port s listens on; keep it to start the same server again
// after a shutdown (Options(dir) with Port set).
func Port(s *server.Server) int {
	return s.Addr().(*net.TCPAddr).Port
}

// JetStream connects to url and returns a JetStream context on it; the
// connection closes when the test ends.
func JetStream(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect to nats: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}

// Cluster is n JetStream servers clustered in-process on loopback.
type Cluster struct {
	Servers []*server.Server
	opts    []*server.Options // each node's options, client port fixed: Restart reuses them
}

// StartCluster runs an n-node JetStream cluster and waits until it can
// serve JetStream requests; it shuts down when the test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	// Every port is the kernel's choice when the node binds it (a port
	// picked beforehand can be taken by a parallel test meanwhile); each
	// node routes to the nodes started before it, and gossip completes the
	// mesh.
	c := &Cluster{}
	var routes []string
	for i := range n {
		opts := Options(t.TempDir())
		opts.ServerName = fmt.Sprintf("n%d", i)
		opts.Cluster = server.ClusterOpts{Name: "relay-test", Host: "127.0.0.1", Port: server.RANDOM_PORT}
		opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		again := opts.Clone()
		s := Start(t, opts)
		again.Port = Port(s)
		again.Cluster.Port = s.ClusterAddr().Port
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", again.Cluster.Port))
		c.Servers = append(c.Servers, s)
		c.opts = append(c.opts, again)
	}
	for _, o := range c.opts { // a restarted node finds every other one
		o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
	}
	js := JetStream(t, c.URL())
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("jetstream cluster not ready within 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Index is the position in Servers of the node named name (its ServerName,
// "n0", "n1", ...), or -1.
func (c *Cluster) Index(name string) int {
	for i, s := range c.Servers {
		if s.Name() == name {
			return i
		}
	}
	return -1
}

// Stop shuts node i down, as a crash or a rolling restart would, and waits
// until it is down.
func (c *Cluster) Stop(i int) {
	c.Servers[i].Shutdown()
	c.Servers[i].WaitForShutdown()
}

// Restart starts node i again after Stop, on its own store directory,
// client port and cluster port, so that it rejoins the cluster with its
// data; it shuts down when the test ends.
func (c *Cluster) Restart(t testing.TB, i int) *server.Server {
	t.Helper()
	c.Servers[i] = Start(t, c.opts[i].Clone())
	return c.Servers[i]
}

// URL lists every server's client URL, as NATS_URL takes them.
func (c *Cluster) URL() string {
	urls := make([]string, 0, len(c.Servers))
	for _, s := range c.Servers {
		if s.Running() {
			urls = append(urls, s.ClientURL())
		}
	}
	return strings.Join(urls, ",")
}
