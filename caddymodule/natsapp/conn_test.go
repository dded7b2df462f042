package natsapp

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/sdr-os/sdr-caddy/caddymodule/internal/moduletest"
	"github.com/sdr-os/sdr-caddy/internal/lease"
	"github.com/sdr-os/sdr-caddy/internal/natstest"
	"github.com/sdr-os/sdr-caddy/internal/testwait"
	"github.com/sdr-os/sdr-caddy/tests/testenv"
)

// TestNATSEmbeddedJetStreamAndLeaf builds the shared connection the way the
// app does, with an embedded server that has JetStream on and joins a hub
// (a real nats-server in the test) as a leaf node: a message published on
// the hub reaches sdr-caddy's connection, and JetStream answers.
func TestNATSEmbeddedJetStreamAndLeaf(t *testing.T) {
	t.Parallel()
	leafPort := testenv.FreePort(t)
	hub, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		LeafNode: server.LeafNodeOpts{Host: "127.0.0.1", Port: leafPort},
	})
	if err != nil {
		t.Fatal(err)
	}
	go hub.Start()
	defer hub.Shutdown()
	if !hub.ReadyForConnections(10 * time.Second) {
		t.Fatal("hub not ready")
	}

	a := &NATSApp{ConnConfig: ConnConfig{Embedded: &NATSEmbedded{
		Listen:      fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		JetStream:   true,
		StoreDir:    t.TempDir(),
		LeafRemotes: []NATSLeafRemote{{URLs: []string{fmt.Sprintf("nats-leaf://127.0.0.1:%d", leafPort)}}},
	}}}
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	c, err := newNATSConn(a.connConfig(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Destruct()
	if err := c.start(); err != nil {
		t.Fatal(err)
	}
	srv := c.server.Load()
	if srv == nil || !srv.JetStreamEnabled() {
		t.Fatal("embedded server without JetStream")
	}
	testwait.For(t, "the embedded server joining the hub as a leaf node", func() bool { return srv.NumLeafNodes() > 0 })

	got := make(chan *nats.Msg, 4)
	if _, err := c.nc.ChanSubscribe("telemetry.from.hub", got); err != nil {
		t.Fatal(err)
	}
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	remote, err := nats.Connect(hub.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	// Interest crosses the leaf connection asynchronously: publish until
	// the message arrives.
	deadline := time.Now().Add(testwait.Timeout(10 * time.Second))
	for received := false; !received; {
		_ = remote.Publish("telemetry.from.hub", []byte("hi"))
		select {
		case m := <-got:
			received = string(m.Data) == "hi"
		case <-time.After(100 * time.Millisecond):
		}
		if !received && time.Now().After(deadline) {
			t.Fatal("message from the hub did not reach the embedded server within 10s")
		}
	}

	js, err := c.nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AddStream(&nats.StreamConfig{Name: "SDR", Subjects: []string{"rec.>"}}); err != nil {
		t.Fatalf("JetStream on the embedded server: %v", err)
	}
	if _, err := js.Publish("rec.x", []byte("1")); err != nil {
		t.Fatalf("JetStream publish: %v", err)
	}
}

// TestNATSConnStartsOnStart: the shared connection is made in Provision
// without dialing or starting the embedded server (caddy validate
// provisions the app and must not bind its port, nor connect to a live
// server); start does both, once.
func TestNATSConnStartsOnStart(t *testing.T) {
	t.Parallel()
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	a := &NATSApp{ConnConfig: ConnConfig{Embedded: &NATSEmbedded{Listen: listen}}}
	c, err := newNATSConn(a.connConfig(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Destruct()
	if conn, err := net.Dial("tcp", listen); err == nil {
		conn.Close()
		t.Fatalf("the embedded server listens on %s before start", listen)
	}
	if c.nc.Status() == nats.CONNECTED || c.server.Load() != nil {
		t.Fatalf("connected (%v) or server running before start", c.nc.Status())
	}
	if err := c.start(); err != nil {
		t.Fatal(err)
	}
	if err := c.start(); err != nil { // a reloaded config's Start: nothing more
		t.Fatal(err)
	}
	if c.nc.Status() != nats.CONNECTED {
		t.Fatalf("after start: %v", c.nc.Status())
	}
	probe, err := nats.Connect("nats://" + listen)
	if err != nil {
		t.Fatalf("the embedded server does not listen on %s after start: %v", listen, err)
	}
	probe.Close()

	// An external server: nothing dials it before start.
	ext := testenv.StartNATS(t)
	b := &NATSApp{ConnConfig: ConnConfig{URLs: []string{ext}}}
	d, err := newNATSConn(b.connConfig(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Destruct()
	if d.nc.Status() == nats.CONNECTED {
		t.Fatal("connected to the external server before start")
	}
	if err := d.start(); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the connection to the external server", func() bool { return d.nc.Status() == nats.CONNECTED })
}

// TestNATSExtraConn: NewConn's connections reach the shared connection's
// server with its credentials (the embedded server requires the token),
// under their own name; one made before start dials nothing until start,
// then connects, and a message it publishes meanwhile goes out then.
func TestNATSExtraConn(t *testing.T) {
	t.Parallel()
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	a := &NATSApp{ConnConfig: ConnConfig{Token: "s3cret", Embedded: &NATSEmbedded{Listen: listen}}}
	c, err := newNATSConn(a.connConfig(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Destruct()
	a.conn = c
	a.log = zap.NewNop()
	early, err := a.NewConn("recorder")
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	if early.Status() == nats.CONNECTED {
		t.Fatal("the extra connection connected before start")
	}
	if err := early.Publish("x.early", []byte("1")); err != nil {
		t.Fatalf("publishing before start: %v", err)
	}
	if err := c.start(); err != nil {
		t.Fatal(err)
	}
	sub, err := c.nc.SubscribeSync("x.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	late, err := a.NewConn("other")
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	if late.Status() != nats.CONNECTED {
		t.Errorf("an extra connection made after start: %v, want connected at once", late.Status())
	}
	testwait.For(t, "the early extra connection connected", func() bool { return early.Status() == nats.CONNECTED })
	// Published before start, sent on connecting: it may have gone out
	// before the subscription; publish again to know the path works.
	if err := early.Publish("x.after", []byte("2")); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := sub.NextMsg(testwait.Timeout(testwait.Default))
		if err != nil {
			t.Fatalf("nothing from the extra connection: %v", err)
		}
		if m.Subject == "x.after" {
			break
		}
	}
	cz, err := c.server.Load().Connz(&server.ConnzOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ci := range cz.Conns {
		names = append(names, ci.Name)
	}
	slices.Sort(names)
	if got := strings.Join(names, " "); got != "sdr-caddy sdr-caddy-other sdr-caddy-recorder" {
		t.Errorf("connections %q, want the shared one and the two extra ones by name", got)
	}
}

// TestNATSAppLeaseAndGateStartWithTheApp: the gate and the control lease a
// handler takes in Provision (as Attach does) dial nothing and put nothing
// on the bus before the app starts, even when someone takes control (the
// lease publishes its state); the config that never starts (caddy
// validate) never connects. After Start the lease's state reaches the bus.
// The server is a real nats-server, in process.
func TestNATSAppLeaseAndGateStartWithTheApp(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t, nil)
	watch := natstest.Connect(t, srv)
	states := make(chan *nats.Msg, 8)
	if _, err := watch.ChanSubscribe(lease.Subject, states); err != nil {
		t.Fatal(err)
	}
	if err := watch.Flush(); err != nil {
		t.Fatal(err)
	}
	clients := srv.NumClients() // the watcher

	provision := func() (*NATSApp, func()) {
		ctx, cancel := moduletest.Context(t)
		// A name of its own: the shared connection of another test's app
		// must not be this one.
		a := &NATSApp{ConnConfig: ConnConfig{URLs: []string{srv.ClientURL()}, Name: t.Name()},
			Control: &NATSControl{Lease: true}}
		if err := a.Provision(ctx); err != nil {
			cancel()
			t.Fatal(err)
		}
		if _, err := a.Gate("front"); err != nil {
			t.Fatal(err)
		}
		l, err := a.Lease("front")
		if err != nil || l == nil {
			t.Fatalf("lease: %v, %v", l, err)
		}
		if ok, _ := l.Conn().Take(); !ok {
			t.Fatal("taking control of a free lease")
		}
		return a, func() {
			if err := a.Cleanup(); err != nil {
				t.Error(err)
			}
			cancel()
		}
	}

	// caddy validate: provisioned, cleaned up, never started.
	_, cleanup := provision()
	if n := srv.NumClients(); n != clients {
		t.Errorf("%d clients before start, want the watcher's %d", n, clients)
	}
	cleanup()
	if err := watch.Flush(); err != nil { // everything the server got so far has reached the watcher
		t.Fatal(err)
	}
	select {
	case m := <-states:
		t.Fatalf("a config that never started published %s", m.Data)
	default:
	}

	// A config that starts: the lease's state goes out once connected.
	a, cleanup := provision()
	defer cleanup()
	if n := srv.NumClients(); n != clients {
		t.Errorf("%d clients before start, want the watcher's %d", n, clients)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	m := testwait.Recv(t, states, "the lease state after start")
	if !strings.Contains(string(m.Data), `"held":true`) {
		t.Errorf("lease state %s, want held", m.Data)
	}
}
