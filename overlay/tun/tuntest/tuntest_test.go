package tuntest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/meshnode/meshnode/overlay/tun"
)

func readWithin(t *testing.T, d *Device, bufs [][]byte, sizes []int) (int, error) {
	t.Helper()
	type res struct {
		n   int
		err error
	}
	ch := make(chan res, 1)
	go func() {
		n, err := d.Read(bufs, sizes)
		ch <- res{n, err}
	}()
	select {
	case r := <-ch:
		return r.n, r.err
	case <-time.After(2 * time.Second):
		d.Close()
		t.Fatal("Read did not return")
		return 0, nil
	}
}

func TestInjectedPacketsAreRead(t *testing.T) {
	d := NewDevice("tun-test", 1300)
	if d.Name() != "tun-test" || d.MTU() != 1300 {
		t.Fatalf("Name/MTU = %q/%d", d.Name(), d.MTU())
	}
	pkt := []byte{1, 2, 3}
	d.Inject(pkt)
	pkt[0] = 9 // Inject copied it
	d.Inject([]byte{4, 5})
	d.Inject([]byte{6})
	bufs := [][]byte{make([]byte, 10), make([]byte, 10)}
	sizes := make([]int, 2)
	n, err := readWithin(t, d, bufs, sizes)
	if err != nil || n != 2 {
		t.Fatalf("Read = %d, %v", n, err)
	}
	if got := fmt.Sprint(bufs[0][:sizes[0]], bufs[1][:sizes[1]]); got != "[1 2 3] [4 5]" {
		t.Fatalf("read %s", got)
	}
	n, err = readWithin(t, d, bufs, sizes)
	if n != 1 || err != nil || bufs[0][0] != 6 {
		t.Fatalf("second Read = %d, %v", n, err)
	}
}

func TestWrittenPacketsAreDeliveredAsCopies(t *testing.T) {
	d := NewDevice("t", 1300)
	p := []byte{7, 7}
	if n, err := d.Write([][]byte{p, {8}}); n != 2 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	p[0] = 0
	if got := <-d.Delivered(); fmt.Sprint(got) != "[7 7]" {
		t.Fatalf("delivered %v", got)
	}
	if got := <-d.Delivered(); fmt.Sprint(got) != "[8]" {
		t.Fatalf("delivered %v", got)
	}
}

func TestQueuesAreBounded(t *testing.T) {
	d := NewDeviceQueue("t", 1300, 2)
	if !d.TryInject([]byte{1}) || !d.TryInject([]byte{2}) || d.TryInject([]byte{3}) {
		t.Fatal("TryInject did not stop at the queue length")
	}
	if n, err := d.Write([][]byte{{1}, {2}, {3}, {4}}); n != 4 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if d.Dropped() != 2 || len(d.Delivered()) != 2 {
		t.Fatalf("dropped %d, queued %d", d.Dropped(), len(d.Delivered()))
	}
}

func TestShortBufferTruncates(t *testing.T) {
	d := NewDevice("t", 1300)
	d.Inject([]byte{1, 2, 3, 4})
	bufs, sizes := [][]byte{make([]byte, 2)}, []int{0}
	if n, err := readWithin(t, d, bufs, sizes); n != 1 || err != nil || sizes[0] != 2 {
		t.Fatalf("Read = %d, %v, size %d", n, err, sizes[0])
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	d := NewDevice("t", 1300)
	errc := make(chan error, 1)
	go func() {
		_, err := d.Read([][]byte{make([]byte, 10)}, []int{0})
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	d.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, tun.ErrClosed) {
			t.Fatalf("Read after Close: %v", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Close did not unblock Read")
	}
	if _, err := d.Write([][]byte{{1}}); !errors.Is(err, tun.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	if d.Inject([]byte{1}) || d.TryInject([]byte{1}) {
		t.Fatal("Inject after Close succeeded")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestInjectBlockedOnFullQueueReturnsOnClose(t *testing.T) {
	d := NewDeviceQueue("t", 1300, 1)
	d.Inject([]byte{1})
	done := make(chan bool)
	go func() { done <- d.Inject([]byte{2}) }()
	time.Sleep(10 * time.Millisecond)
	d.Close()
	if <-done {
		t.Fatal("Inject reported success on a closed device")
	}
}

func BenchmarkInjectRead(b *testing.B) {
	d := NewDevice("t", 1300)
	pkt := make([]byte, 1300)
	bufs, sizes := [][]byte{make([]byte, 1500)}, []int{0}
	b.ReportAllocs()
	for b.Loop() {
		d.Inject(pkt)
		d.Read(bufs, sizes)
	}
}
