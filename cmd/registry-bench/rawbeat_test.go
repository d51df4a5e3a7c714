package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	registryv1 "github.com/regcenter/registry/api/registryv1"
	"github.com/regcenter/registry/internal/poll"
)

// beatSink answers every beat frame with its seq, except the first frame
// of all, which it answers with a BeatRetry; it counts the beats each
// instance id received, and breaks the first stream after breakAfter
// frames (0: never).
type beatSink struct {
	registryv1.UnimplementedRegistryServer
	breakAfter int

	mu      sync.Mutex
	frames  int
	streams int
	beats   map[string]int
}

func (s *beatSink) BeatStream(st grpc.BidiStreamingServer[registryv1.BeatRequest, registryv1.BeatResponse]) error {
	s.mu.Lock()
	s.streams++
	first := s.streams == 1
	s.mu.Unlock()
	for n := 1; ; n++ {
		req, err := st.Recv()
		if err != nil {
			return nil
		}
		s.mu.Lock()
		s.frames++
		retry := s.frames == 1
		for _, b := range req.Beats {
			s.beats[b.Id]++
		}
		s.mu.Unlock()
		resp := &registryv1.BeatResponse{Seq: req.Seq}
		if retry {
			resp.Retry = &registryv1.BeatRetry{Message: "no leader yet"}
		}
		if err := st.Send(resp); err != nil {
			return err
		}
		if first && s.breakAfter > 0 && n == s.breakAfter {
			return errors.New("broken on purpose")
		}
	}
}

func (s *beatSink) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.beats[id]
}

func serveSink(t *testing.T, sink *beatSink) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	registryv1.RegisterRegistryServer(srv, sink)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return l.Addr().String()
}

func rawGenFor(t *testing.T, addr string, n, perFrame, streams int) *rawGen {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return newRawGen([]string{addr}, func(string) (*grpc.ClientConn, error) { return cc, nil }, n, perFrame, streams, 50*time.Millisecond,
		func(i int) *registryv1.InstanceRef {
			return &registryv1.InstanceRef{Service: "s", Id: fmt.Sprint(i), Incarnation: 1}
		})
}

func TestTheRawGeneratorBeatsOnlyFullyRegisteredFramesAndResendsARetriedOne(t *testing.T) {
	sink := &beatSink{beats: map[string]int{}}
	g := rawGenFor(t, serveSink(t, sink), 10, 4, 2) // frames 0-3, 4-7, 8-9
	for i := range 9 {                              // 9 is left unregistered: frame 8-9 stays inactive
		g.registered(i, 4)
	}
	g.start(t.Context())
	defer g.stop()

	poll.Eventually(t, 10*time.Second, func(context.Context) error {
		for i := range 8 {
			if c := sink.count(fmt.Sprint(i)); c < 3 {
				return fmt.Errorf("instance %d beaten %d times, want 3", i, c)
			}
		}
		if g.rec.retried.Load() == 0 {
			return errors.New("no frame retried yet")
		}
		return nil
	})
	if g.allAcked() {
		t.Error("allAcked with a frame whose instances are not all registered")
	}
	for _, id := range []string{"8", "9"} {
		if c := sink.count(id); c != 0 {
			t.Errorf("instance %s (not all of its frame registered) beaten %d times", id, c)
		}
	}
	g.registered(9, 4)
	poll.Eventually(t, 10*time.Second, func(context.Context) error {
		if !g.allAcked() {
			return errors.New("not every frame answered")
		}
		return nil
	})
	if got := g.rec.rejected.Load(); got != 0 {
		t.Errorf("%d beats counted as rejected, want 0", got)
	}
}

func TestTheRawGeneratorReopensABrokenStreamAndKeepsBeating(t *testing.T) {
	sink := &beatSink{beats: map[string]int{}, breakAfter: 2}
	g := rawGenFor(t, serveSink(t, sink), 4, 2, 1)
	for i := range 4 {
		g.registered(i, 2)
	}
	g.start(t.Context())
	defer g.stop()
	poll.Eventually(t, 10*time.Second, func(context.Context) error {
		if g.breaks() == 0 {
			return errors.New("the stream did not break yet")
		}
		if c := sink.count("0"); c < 4 {
			return fmt.Errorf("instance 0 beaten %d times, want 4", c)
		}
		return nil
	})
	sink.mu.Lock()
	streams := sink.streams
	sink.mu.Unlock()
	if streams < 2 {
		t.Errorf("%d streams opened, want a second one after the break", streams)
	}
}
