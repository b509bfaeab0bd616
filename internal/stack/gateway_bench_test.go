package stack

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/engine/sim"
	"github.com/strata-inference/strata/internal/gateway"
	"github.com/strata-inference/strata/internal/store"
)

// BenchmarkGatewayOverhead measures what the gateway adds to a request, open loop: small
// non-streaming completions sent at a fixed rate (STRATA_BENCH_RPS, default 1000/s, for
// STRATA_BENCH_SECONDS, default 5 s per phase) to a simulated replica answering at once
// (time_scale 0), first directly over loopback HTTP, then through the gateway (API key auth,
// RPM/TPM limits on, metering with the usage record committed to SQLite before the answer) in
// front of the same replica in memory. Latency is measured from each request's scheduled send
// time, so a slow phase cannot hide queueing (no coordinated omission). It reports p50 and p99 of
// both phases, their differences (the gateway's added latency) and the process's peak RSS.
//
//	STRATA_BENCH_SECONDS=10 go test -run XXX -bench GatewayOverhead -benchtime 1x ./internal/stack
func BenchmarkGatewayOverhead(b *testing.B) {
	rps, seconds := envInt("STRATA_BENCH_RPS", 1000), envInt("STRATA_BENCH_SECONDS", 5)
	zero := 0.0
	simCfg := config.Default().Sim
	simCfg.TimeScale = &zero
	engine, err := sim.New(simCfg, "sim-0", clock.RealClock{}, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	defer engine.Close()

	dir := b.TempDir()
	st, err := store.Open(context.Background(), config.Store{Driver: "sqlite", DSN: filepath.Join(dir, "strata.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	secret := []byte("0123456789abcdef0123456789abcdef")
	admin := gateway.NewAdmin(st, secret)
	if _, err := admin.CreateTenant(context.Background(), "bench", 1<<30, 1<<40, nil); err != nil {
		b.Fatal(err)
	}
	key, _, err := admin.CreateKey(context.Background(), "bench", "")
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	gw, err := gateway.New(config.Default().Gateway, st, secret, handlerTransport{h: engine, log: log}, clock.RealClock{},
		prometheus.NewRegistry(), log)
	if err != nil {
		b.Fatal(err)
	}
	defer gw.Close()

	direct, stopDirect := serveLoopback(b, engine)
	defer stopDirect()
	through, stopGW := serveLoopback(b, gw)
	defer stopGW()

	model := simCfg.ServedModelName
	if model == "" {
		model = simCfg.Model
	}
	body := `{"model":"` + model + `","prompt":"Say hello to the benchmark.","max_tokens":4,"ignore_eos":true}`
	for b.Loop() {
		// Warm both paths (connections, caches, the SQLite file), then measure.
		openLoop(b, direct, "", body, rps, time.Second)
		openLoop(b, through, key, body, rps, time.Second)
		d := openLoop(b, direct, "", body, rps, time.Duration(seconds)*time.Second)
		g := openLoop(b, through, key, body, rps, time.Duration(seconds)*time.Second)
		b.ReportMetric(float64(d.p50.Microseconds()), "direct-p50-µs")
		b.ReportMetric(float64(d.p99.Microseconds()), "direct-p99-µs")
		b.ReportMetric(float64(g.p50.Microseconds()), "gateway-p50-µs")
		b.ReportMetric(float64(g.p99.Microseconds()), "gateway-p99-µs")
		b.ReportMetric(float64((g.p50 - d.p50).Microseconds()), "added-p50-µs")
		b.ReportMetric(float64((g.p99 - d.p99).Microseconds()), "added-p99-µs")
		b.ReportMetric(float64(d.cpu.Microseconds()), "direct-cpu-µs/req")
		b.ReportMetric(float64(g.cpu.Microseconds()), "gateway-cpu-µs/req")
		b.ReportMetric(float64(peakRSSKiB())/1024, "peak-RSS-MiB")
		b.ReportMetric(float64(g.errors+d.errors), "errors")
	}
}

type loopResult struct {
	p50, p99 time.Duration
	errors   int
	cpu      time.Duration // process CPU time (user + system) per request, client side included
}

// openLoop sends one request every 1/rps for d, each on its own goroutine, and returns the
// latency percentiles measured from each request's scheduled start.
func openLoop(b *testing.B, url, key, body string, rps int, d time.Duration) loopResult {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, MaxIdleConns: 1024}}
	defer client.CloseIdleConnections()
	n := int(d.Seconds() * float64(rps))
	interval := time.Second / time.Duration(rps)
	lat := make([]time.Duration, n)
	var errs sync.Map
	var wg sync.WaitGroup
	cpu0 := processCPU()
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(i) * interval)
		if w := time.Until(at); w > 0 {
			time.Sleep(w)
		}
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodPost, url+"/v1/completions", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if key != "" {
				req.Header.Set("Authorization", "Bearer "+key)
			}
			resp, err := client.Do(req)
			if err == nil {
				msg, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d: %s", resp.StatusCode, msg)
				}
			}
			if err != nil {
				errs.Store(i, err)
			}
			lat[i] = time.Since(at)
		})
	}
	wg.Wait()
	r := loopResult{cpu: (processCPU() - cpu0) / time.Duration(n)}
	errs.Range(func(_, v any) bool {
		r.errors++
		if r.errors == 1 {
			b.Logf("first error: %v", v)
		}
		return true
	})
	slices.Sort(lat)
	r.p50, r.p99 = lat[n/2], lat[n*99/100]
	return r
}

func serveLoopback(b *testing.B, h http.Handler) (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// processCPU is the process's user + system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakRSSKiB is the process's peak resident set size (VmHWM of /proc/self/status), 0 where it is
// not available.
func peakRSSKiB() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	return 0
}
