package recorder

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"

	"github.com/sdr-os/sdr-caddy/internal/natstest"
	"github.com/sdr-os/sdr-caddy/internal/recording"
)

// TestCleanupWhileClientsUseTheRecorder records commands, keeps and reads
// the recording from several goroutines while Cleanup drops the recorder:
// under -race, a read of the recorder without the lock is reported; after
// Cleanup every call answers "not provisioned" or does nothing.
func TestCleanupWhileClientsUseTheRecorder(t *testing.T) {
	s := natstest.Server(t, &server.Options{JetStream: true, StoreDir: t.TempDir()})
	nc := natstest.Connect(t, s)
	rec, err := recording.New(nc, recording.Config{Stream: recording.StreamConfig{Memory: true}, IDRInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	rec.Start()
	a := &App{log: zap.NewNop(), rec: rec}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				a.RecordCommand("front", "127.0.0.1:1", []byte(`{"action":"pause"}`), nil)
				_, _, _ = a.Keep("front", "127.0.0.1:1", []byte(`{"name":"x","before_s":1}`))
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_ = a.ReadRecording(ctx, "front", time.Now(), func(recording.Record) error { return nil })
				cancel()
				_ = a.HasKept("x")
			}
		}()
	}
	if err := a.Cleanup(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if a.Recorder() != nil {
		t.Fatal("the recorder is still there after Cleanup")
	}
	if err := a.ReadRecording(context.Background(), "front", time.Now(), nil); err == nil {
		t.Error("ReadRecording after Cleanup: no error")
	}
	if _, _, err := a.Keep("front", "c", nil); err == nil {
		t.Error("Keep after Cleanup: no error")
	}
}
