package fleet

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every Linux port.
const clockTicks = 100

// ProcSample is one reading of a process's CPU time and memory from /proc.
type ProcSample struct {
	CPU   float64 `json:"cpu_s"`  // user + system seconds since it started
	RSSKB int64   `json:"rss_kb"` // VmRSS
	HWMKB int64   `json:"hwm_kb"` // VmHWM, the peak RSS
}

// ReadProc samples process pid.
func ReadProc(pid int) (ProcSample, error) {
	var s ProcSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	if s.CPU, err = parseStatCPU(stat); err != nil {
		return s, err
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	s.RSSKB, s.HWMKB = statusKB(status, "VmRSS:"), statusKB(status, "VmHWM:")
	return s, nil
}

// parseStatCPU reads utime + stime (fields 14 and 15) from /proc/PID/stat. The command
// name (field 2) may hold spaces and parentheses, so fields are counted after its last ')'.
func parseStatCPU(stat []byte) (float64, error) {
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, fmt.Errorf("fleet: /proc stat without a command name")
	}
	f := strings.Fields(string(stat[end+1:]))
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("fleet: /proc stat has %d fields", len(f)+2)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	k, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("fleet: /proc stat: bad utime/stime %q %q", f[11], f[12])
	}
	return float64(u+k) / clockTicks, nil
}

func statusKB(status []byte, key string) int64 {
	for line := range strings.SplitSeq(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

// UDPRcvbufErrors is the kernel's count of UDP datagrams dropped because a socket's receive
// buffer was full, in the caller's network namespace (/proc/net/snmp is per namespace): the
// target's and the fleet's sockets together, since the caller shares the target's namespace.
func UDPRcvbufErrors() (int64, error) {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0, err
	}
	return parseRcvbufErrors(b)
}

func parseRcvbufErrors(snmp []byte) (int64, error) {
	var names []string
	for line := range strings.SplitSeq(string(snmp), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				return strconv.ParseInt(f[i], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("fleet: no Udp RcvbufErrors in /proc/net/snmp")
}
