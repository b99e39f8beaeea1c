// The servers' and this process's side of a run, read from /proc as myelin-load reads them
// (crates/bench/src/load/server.rs): CPU time (user + system) over the measured window as a
// percentage of one core, and peak memory as VmHWM after resetting it at the window's start.
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicksPerSec is USER_HZ, the unit of /proc/<pid>/stat's utime and stime: 100 on every
// Linux architecture Go builds for (the kernel fixes it for user space).
const clockTicksPerSec = 100

type meter struct {
	pids       []int
	at         time.Time
	ticks      uint64
	ownCPU     time.Duration
	ownStarted time.Time
}

type figures struct {
	serverCPUPercent float64
	serverPeakMemory uint64
	clientCPUPercent float64
	clientPeakRSS    uint64
}

func startMeter(pids []int) (*meter, error) {
	for _, pid := range pids {
		// Needs the right to write the server's clear_refs (same user, or root); without it
		// the peak since the server started is reported, which is still an upper bound.
		_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
	}
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	ticks, err := cpuTicks(pids)
	if err != nil {
		return nil, err
	}
	return &meter{pids: pids, at: time.Now(), ticks: ticks, ownCPU: ownCPU(), ownStarted: time.Now()}, nil
}

func (m *meter) finish() (figures, error) {
	ticks, err := cpuTicks(m.pids)
	if err != nil {
		return figures{}, err
	}
	elapsed := time.Since(m.at).Seconds()
	var f figures
	if elapsed > 0 {
		busy := float64(ticks-m.ticks) / clockTicksPerSec
		f.serverCPUPercent = 100 * busy / elapsed
	}
	for _, pid := range m.pids {
		kib, err := statusKiB(fmt.Sprintf("/proc/%d/status", pid), "VmHWM")
		if err != nil {
			return figures{}, err
		}
		f.serverPeakMemory += kib * 1024
	}
	if own := time.Since(m.ownStarted).Seconds(); own > 0 {
		f.clientCPUPercent = 100 * (ownCPU() - m.ownCPU).Seconds() / own
	}
	kib, err := statusKiB("/proc/self/status", "VmHWM")
	if err != nil {
		return figures{}, err
	}
	f.clientPeakRSS = kib * 1024
	return f, nil
}

// cpuTicks sums utime + stime of the processes.
func cpuTicks(pids []int) (uint64, error) {
	var sum uint64
	for _, pid := range pids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, fmt.Errorf("reading the CPU time of server process %d: %w", pid, err)
		}
		// The command name may hold spaces: the fields counted here start after its ')'.
		text := string(raw)
		fields := strings.Fields(text[strings.LastIndexByte(text, ')')+1:])
		// Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the name.
		if len(fields) < 13 {
			return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
		}
		for _, field := range fields[11:13] {
			n, err := strconv.ParseUint(field, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
			}
			sum += n
		}
	}
	return sum, nil
}

func ownCPU() time.Duration {
	var usage syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &usage) != nil {
		return 0
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}

// statusKiB reads a kB field (VmHWM, VmRSS) of a /proc status file.
func statusKiB(path, field string) (uint64, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		rest, ok := strings.CutPrefix(line, field+":")
		if !ok {
			continue
		}
		return strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
	}
	return 0, fmt.Errorf("%s: no %s", path, field)
}
