// Command etcd-load drives a running etcd cluster with the durable-append workload of
// myelin-load: C closed-loop clients, each on its own connection, each writing E new keys per
// request (one Put for E = 1, one Txn of E Puts otherwise) with P-byte values, for a warm-up
// and then a measured window. It prints one JSON result line in the shape myelin-load writes
// (crates/bench/src/load/record.rs), so the same tables can show both, and appends it to
// --results.
//
// It writes to one member: the leader by default (--via leader), as the Myelin cluster is
// driven through node-1, its leader; --via follower writes through another member, which
// forwards proposals to the leader. scripts/bench-cluster starts the members and runs it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Bounds on the arguments, as myelin-load has them.
const (
	clientsMax     = 4096
	eventsPerTxMax = 128 // etcd's default --max-txn-ops
	payloadMax     = 1 << 20
	secondsMax     = 3600.0
	// How long the members may take to elect a leader before the run gives up.
	leaderWait = 60 * time.Second
	// One request's deadline: a stuck cluster fails the run rather than hanging it.
	requestTimeout = 30 * time.Second
)

type config struct {
	endpoints   []string
	via         string
	clients     int
	eventsPerTx int
	payload     int
	seconds     float64
	warmup      float64
	results     string
	label       string
	serverPids  []int
}

func parseArgs() (config, error) {
	var c config
	var endpoints, pids string
	flag.StringVar(&endpoints, "endpoints", "", "client URLs of the members, comma-separated (http://host:port,...)")
	flag.StringVar(&c.via, "via", "leader", "the member written to: leader or follower")
	flag.IntVar(&c.clients, "clients", 1, "closed-loop clients, each on its own connection")
	flag.IntVar(&c.eventsPerTx, "events-per-tx", 1, "keys written per request (1: a Put; more: one Txn of that many Puts)")
	flag.IntVar(&c.payload, "payload-bytes", 200, "bytes per value")
	flag.Float64Var(&c.seconds, "seconds", 10, "length of the measured window")
	flag.Float64Var(&c.warmup, "warmup-seconds", 2, "run this long before measuring")
	flag.StringVar(&c.results, "results", "", "append the JSON result line to this file too")
	flag.StringVar(&c.label, "label", "", "free text stored in the result")
	flag.StringVar(&pids, "server-pids", "", "process ids of the members, comma-separated, for their CPU time and peak memory")
	flag.Parse()
	if flag.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", flag.Arg(0))
	}
	for _, e := range strings.Split(endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			c.endpoints = append(c.endpoints, e)
		}
	}
	for _, p := range strings.Split(pids, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		pid, err := strconv.Atoi(p)
		if err != nil || pid <= 0 {
			return c, fmt.Errorf("--server-pids: %q is not a process id", p)
		}
		c.serverPids = append(c.serverPids, pid)
	}
	switch {
	case len(c.endpoints) == 0:
		return c, errors.New("--endpoints is required")
	case c.via != "leader" && c.via != "follower":
		return c, fmt.Errorf("--via must be leader or follower (got %q)", c.via)
	case c.clients < 1 || c.clients > clientsMax:
		return c, fmt.Errorf("--clients must be between 1 and %d (got %d)", clientsMax, c.clients)
	case c.eventsPerTx < 1 || c.eventsPerTx > eventsPerTxMax:
		return c, fmt.Errorf("--events-per-tx must be between 1 and %d (got %d)", eventsPerTxMax, c.eventsPerTx)
	case c.payload < 0 || c.payload > payloadMax:
		return c, fmt.Errorf("--payload-bytes must be between 0 and %d (got %d)", payloadMax, c.payload)
	case !(c.seconds > 0 && c.seconds <= secondsMax):
		return c, fmt.Errorf("--seconds must be above 0 and at most %g (got %g)", secondsMax, c.seconds)
	case !(c.warmup >= 0 && c.warmup <= secondsMax):
		return c, fmt.Errorf("--warmup-seconds must be between 0 and %g (got %g)", secondsMax, c.warmup)
	}
	return c, nil
}

func newClient(endpoint string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
}

// pickMember waits until the members agree on a leader and answers the endpoint to write to.
func pickMember(endpoints []string, via string) (string, error) {
	deadline := time.Now().Add(leaderWait)
	for {
		target, err := tryPickMember(endpoints, via)
		if err == nil {
			return target, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no leader after %s: %w", leaderWait, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func tryPickMember(endpoints []string, via string) (string, error) {
	client, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return "", err
	}
	defer client.Close()
	var leader uint64
	ids := make(map[string]uint64, len(endpoints))
	for _, e := range endpoints {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		status, err := client.Status(ctx, e)
		cancel()
		if err != nil {
			return "", fmt.Errorf("status of %s: %w", e, err)
		}
		if status.Leader == 0 || (leader != 0 && status.Leader != leader) {
			return "", fmt.Errorf("%s knows no leader yet", e)
		}
		leader = status.Leader
		ids[e] = status.Header.MemberId
	}
	for _, e := range endpoints {
		if (ids[e] == leader) == (via == "leader") {
			return e, nil
		}
	}
	return "", fmt.Errorf("no %s among %v", via, endpoints)
}

// tally is one client's count and latencies inside the window.
type tally struct {
	events, operations uint64
	nanos              []int64
	err                error
}

func appendLoop(client *clientv3.Client, prefix string, eventsPerTx int, value string, from, until time.Time) tally {
	t := tally{nanos: make([]int64, 0, 1<<12)}
	ops := make([]clientv3.Op, eventsPerTx)
	var counter uint64
	for time.Now().Before(until) {
		for i := range ops {
			ops[i] = clientv3.OpPut(fmt.Sprintf("%s/%012d", prefix, counter), value)
			counter++
		}
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		started := time.Now()
		var err error
		if eventsPerTx == 1 {
			_, err = client.Do(ctx, ops[0])
		} else {
			var response *clientv3.TxnResponse
			response, err = client.Txn(ctx).Then(ops...).Commit()
			if err == nil && !response.Succeeded {
				err = errors.New("a transaction without conditions did not succeed")
			}
		}
		done := time.Now()
		cancel()
		if err != nil {
			t.err = fmt.Errorf("writing %s at %d: %w", prefix, counter, err)
			return t
		}
		if !done.Before(from) && !done.After(until) {
			t.events += uint64(eventsPerTx)
			t.operations++
			t.nanos = append(t.nanos, done.Sub(started).Nanoseconds())
		}
	}
	return t
}

func run(c config) (record, error) {
	target, err := pickMember(c.endpoints, c.via)
	if err != nil {
		return record{}, err
	}
	fmt.Fprintf(os.Stderr, "etcd-load: writing through the %s, %s\n", c.via, target)
	clients := make([]*clientv3.Client, 0, c.clients)
	defer func() {
		for _, client := range clients {
			client.Close()
		}
	}()
	for range c.clients {
		client, err := newClient(target)
		if err != nil {
			return record{}, fmt.Errorf("connecting to %s: %w", target, err)
		}
		clients = append(clients, client)
	}
	value := payload(c.payload)
	nonce := time.Now().UnixNano() & 0xffffffff
	from := time.Now().Add(time.Duration(c.warmup * float64(time.Second)))
	until := from.Add(time.Duration(c.seconds * float64(time.Second)))

	tallies := make([]tally, c.clients)
	var wg sync.WaitGroup
	for n, client := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tallies[n] = appendLoop(client, fmt.Sprintf("w%08x-%05d", nonce, n), c.eventsPerTx, value, from, until)
		}()
	}
	time.Sleep(time.Until(from))
	meter, err := startMeter(c.serverPids)
	if err != nil {
		return record{}, err
	}
	wg.Wait()
	figures, err := meter.finish()
	if err != nil {
		return record{}, err
	}

	var events, operations uint64
	var nanos []int64
	for _, t := range tallies {
		if t.err != nil {
			return record{}, t.err
		}
		events += t.events
		operations += t.operations
		nanos = append(nanos, t.nanos...)
	}
	r := record{
		Workload:         "append",
		System:           "etcd",
		Clients:          c.clients,
		EventsPerTx:      c.eventsPerTx,
		PayloadBytes:     c.payload,
		Seconds:          c.seconds,
		Events:           events,
		Operations:       operations,
		EventsPerSec:     float64(events) / c.seconds,
		OperationsPerSec: float64(operations) / c.seconds,
		Latency:          map[string]latency{"append": summarise(nanos)},
		Extra:            map[string]float64{},
		ClientCPUPercent: figures.clientCPUPercent,
		ClientPeakRSS:    figures.clientPeakRSS,
		WrittenAt:        time.Now().Unix(),
	}
	if len(c.serverPids) > 0 {
		r.ServerCPUPercent = &figures.serverCPUPercent
		r.ServerPeakMemory = &figures.serverPeakMemory
		processes := len(c.serverPids)
		r.ServerProcesses = &processes
	}
	if c.label != "" {
		r.Label = &c.label
	}
	return r, nil
}

// payload is the value every client writes: the bytes myelin-load puts into its events
// (crates/bench/src/load/system.rs), not all zeros and not one repeated byte, so nothing on
// the way to the disk can shortcut the write.
func payload(size int) string {
	bytes := make([]byte, size)
	for i := range bytes {
		bytes[i] = byte(i * 31 % 251)
	}
	return string(bytes)
}

// record is crates/bench/src/load/record.rs's Record.
type record struct {
	Workload          string             `json:"workload"`
	System            string             `json:"system"`
	Clients           int                `json:"clients"`
	EventsPerTx       int                `json:"events_per_tx"`
	PayloadBytes      int                `json:"payload_bytes"`
	Seconds           float64            `json:"seconds"`
	Events            uint64             `json:"events"`
	Operations        uint64             `json:"operations"`
	EventsPerSec      float64            `json:"events_per_sec"`
	OperationsPerSec  float64            `json:"operations_per_sec"`
	Latency           map[string]latency `json:"latency"`
	Extra             map[string]float64 `json:"extra"`
	ServerCPUPercent  *float64           `json:"server_cpu_percent"`
	ServerPeakMemory  *uint64            `json:"server_peak_memory_bytes"`
	ServerProcesses   *int               `json:"server_processes"`
	ClientCPUPercent  float64            `json:"client_cpu_percent"`
	ClientPeakRSS     uint64             `json:"client_peak_rss_bytes"`
	StoreEventsBefore *uint64            `json:"store_events_before"`
	Label             *string            `json:"label"`
	WrittenAt         int64              `json:"written_at"`
}

type latency struct {
	Count  uint64  `json:"count"`
	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
}

// summarise takes nearest-rank percentiles, as crates/bench/src/stats.rs does.
func summarise(nanos []int64) latency {
	if len(nanos) == 0 {
		return latency{}
	}
	sort.Slice(nanos, func(i, j int) bool { return nanos[i] < nanos[j] })
	at := func(q float64) float64 {
		rank := int(math.Ceil(q * float64(len(nanos))))
		rank = min(max(rank, 1), len(nanos))
		return float64(nanos[rank-1]) / 1e6
	}
	var sum float64
	for _, n := range nanos {
		sum += float64(n)
	}
	return latency{
		Count:  uint64(len(nanos)),
		MeanMs: sum / float64(len(nanos)) / 1e6,
		P50Ms:  at(0.50),
		P99Ms:  at(0.99),
		P999Ms: at(0.999),
		MaxMs:  at(1.0),
	}
}

func main() {
	c, err := parseArgs()
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd-load:", err)
		os.Exit(2)
	}
	r, err := run(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd-load:", err)
		os.Exit(1)
	}
	line, err := json.Marshal(r)
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd-load: encoding the result:", err)
		os.Exit(1)
	}
	a := r.Latency["append"]
	fmt.Fprintf(os.Stderr, "append etcd clients=%d events/tx=%d payload=%d B: %.0f events/s, %.0f ops/s; append p50 %.3f p99 %.3f p99.9 %.3f ms; client CPU %.0f%%\n",
		r.Clients, r.EventsPerTx, r.PayloadBytes, r.EventsPerSec, r.OperationsPerSec, a.P50Ms, a.P99Ms, a.P999Ms, r.ClientCPUPercent)
	fmt.Println(string(line))
	if c.results != "" {
		if err := appendLine(c.results, line); err != nil {
			fmt.Fprintln(os.Stderr, "etcd-load:", err)
			os.Exit(1)
		}
	}
}

func appendLine(path string, line []byte) error {
	file, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := file.Write(append(line, '\n')); err != nil {
		file.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return file.Close()
}
