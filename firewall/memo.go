package firewall

// Memo remembers the flow one caller last admitted, so the following packets of that flow
// skip the conntrack table: a TSO train read from the TUN device is dozens of segments of
// one flow in a row, and the table's hash and shard lock were most of the firewall's cost.
//
// A hit stands for a table lookup that would have succeeded: the memo is only trusted for
// the rule set, peer and direction it was made under (a reload makes a new rule set, so every
// memo misses and the flow is re-checked in the table), and only for refreshSlack of the
// flow's timeout (at most a second). Entries leave the table only by expiring or by a
// re-check after a reload, and a lookup leaves an entry at least timeout − refreshSlack
// ahead, so within that window the entry is still there. Because hits do not refresh the
// entry, an idle flow may expire up to about two seconds before last packet + timeout.
//
// The zero value is an empty memo. A Memo belongs to one goroutine (one direction of one
// tunnel's data path).
type Memo struct {
	key   flowKey
	rs    *ruleSet
	peer  *Peer
	dir   Direction
	until int64 // unix nanoseconds; the memo is empty once now reaches it
}

func (m *Memo) hit(k *flowKey, rs *ruleSet, peer *Peer, dir Direction, now int64) bool {
	return now < m.until && m.rs == rs && m.peer == peer && m.dir == dir && m.key == *k
}

func (m *Memo) set(k *flowKey, rs *ruleSet, peer *Peer, dir Direction, now, timeout int64) {
	m.key, m.rs, m.peer, m.dir = *k, rs, peer, dir
	m.until = now + refreshSlack(timeout)
}
