package udp

import "testing"

// After SteerSmall, datagrams of up to max bytes of payload reach the second socket and
// larger ones the first, from any sender, also a small one right behind a burst of large
// ones from the same sender.
func TestSteerSmallSplitsByLength(t *testing.T) {
	const max = 288
	main := listen(t, "127.0.0.1:0", Options{ReusePort: true})
	prio := listen(t, main.LocalAddr().String(), Options{ReusePort: true, DisableGRO: true, Batch: 8})
	if err := SteerSmall(main, prio, max); err != nil {
		t.Fatalf("SteerSmall: %v", err)
	}
	const senders, each = 8, 5
	small, large := string(make([]byte, max)), string(make([]byte, max+1))
	for range senders {
		// Without GSO each is a datagram of its own, as on the wire (a GSO train would
		// reach the socket whole, its length that of the train; the priority socket
		// sends without GSO for that reason).
		s := listen(t, "127.0.0.1:0", Options{DisableGSO: true})
		var msgs []Message
		for range each {
			msgs = append(msgs, msg(large, main.LocalAddr()))
		}
		msgs = append(msgs, msg(small, main.LocalAddr()))
		if n, err := s.WriteBatch(msgs); err != nil || n != len(msgs) {
			t.Fatalf("WriteBatch: %d, %v", n, err)
		}
	}
	for _, m := range readN(t, prio, senders) {
		if len(m.Buf) != max {
			t.Errorf("priority socket got %d bytes", len(m.Buf))
		}
	}
	for _, m := range readN(t, main, senders*each) {
		if len(m.Buf) != max+1 {
			t.Errorf("main socket got %d bytes", len(m.Buf))
		}
	}
}

func TestSteerSmallNeedsOneAddress(t *testing.T) {
	a := listen(t, "127.0.0.1:0", Options{ReusePort: true})
	b := listen(t, "127.0.0.1:0", Options{ReusePort: true})
	if err := SteerSmall(a, b, 100); err == nil {
		t.Fatal("sockets on two ports were accepted")
	}
	if err := SteerSmall(a, nil, 100); err == nil {
		t.Fatal("a nil socket was accepted")
	}
}
