package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"k8s.io/utils/clock"

	"github.com/strata-inference/strata/internal/config"
	"github.com/strata-inference/strata/internal/engine/sim"
)

// simMultiCmd is `strata sim`: N simulated vLLM replicas on consecutive ports, each with its
// own KV-event sockets when --kv-events is set. It replaces simCmd (one replica) once the lead
// registers it in cli.go.
func simMultiCmd(g *globals) *cobra.Command {
	var (
		listen, model, served, gpu string
		replicas                   int
		kvEvents                   bool
		kvEndpoint, kvReplay       string
		kvEncoding, kvTopic        string
		timeScale                  float64
		maxNumSeqs                 int
		kvTransferGbps             float64
		faults                     config.SimFaults
		coldStart                  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Run simulated vLLM replicas (OpenAI server shape, /metrics, KV events over ZMQ)",
		Long: `Run N simulated vLLM replicas of one model on one GPU profile, replica i listening on the
--listen port + i (port 0: a free port each). With --kv-events each replica publishes vLLM's
KV-cache events on the --kv-events-endpoint port + i (vLLM's data-parallel port offset), and
serves replays on --kv-events-replay-endpoint port + i when that is set.

Fault injection for testing the layers above (all off by default; deterministic from the
config's sim.seed, the replica and the request's arrival order): --fault-error-rate answers that
fraction of inference requests with vLLM's 500 or 503 error JSON, --fault-hang-rate never answers
that fraction until the client goes away, --fault-reset-rate cuts that fraction of streams after
--fault-reset-after events, and --cold-start answers /health with 503 for that long after start.

  strata sim --replicas 4 --model llama-3-8b --gpu h100 --listen 127.0.0.1:8100 --kv-events
  strata sim --replicas 2 --fault-error-rate 0.05 --fault-reset-rate 0.1 --fault-reset-after 5 --cold-start 20s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := g.loadConfig(func(c *config.Config) {
				f := cmd.Flags()
				if f.Changed("model") {
					c.Sim.Model = model
				}
				if f.Changed("served-model-name") {
					c.Sim.ServedModelName = served
				}
				if f.Changed("gpu") {
					c.Sim.GPU = gpu
				}
				if f.Changed("time-scale") {
					c.Sim.TimeScale = &timeScale
				}
				if f.Changed("max-num-seqs") {
					c.Sim.MaxNumSeqs = maxNumSeqs
				}
				if f.Changed("kv-transfer-gbps") {
					c.Sim.KVTransferGbps = kvTransferGbps
				}
				if f.Changed("fault-error-rate") {
					c.Sim.Faults.ErrorRate = faults.ErrorRate
				}
				if f.Changed("fault-reset-rate") {
					c.Sim.Faults.ResetRate = faults.ResetRate
				}
				if f.Changed("fault-reset-after") {
					c.Sim.Faults.ResetAfter = faults.ResetAfter
				}
				if f.Changed("fault-hang-rate") {
					c.Sim.Faults.HangRate = faults.HangRate
				}
				if f.Changed("cold-start") {
					c.Sim.Faults.ColdStart = config.Duration(coldStart)
				}
				if kvEvents {
					c.Sim.KVEventsEndpoint = kvEndpoint
					c.Sim.KVEventsReplayEndpoint = kvReplay
					c.Sim.KVEventsEncoding = kvEncoding
					c.Sim.KVEventsTopic = kvTopic
				}
			})
			if err != nil {
				return err
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			reps, err := startSimReplicas(cfg.Sim, replicas, listen, log)
			if err != nil {
				return err
			}
			defer stopSimReplicas(reps)
			<-cmd.Context().Done()
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&replicas, "replicas", 1, "number of replicas")
	f.StringVar(&listen, "listen", "127.0.0.1:8000", "address of replica 0 (host:port); replica i adds i to the port")
	f.StringVar(&model, "model", "", "model profile (default: sim.model of the config), e.g. llama-3-8b, llama-3-70b, qwen3-32b")
	f.StringVar(&served, "served-model-name", "", "model name of the API (default: the model)")
	f.StringVar(&gpu, "gpu", "", "GPU profile (default: sim.gpu of the config): h100, h200, a100, a100-40gb, l40s, a10g")
	f.Float64Var(&timeScale, "time-scale", 1, "multiplies every simulated delay (0: answer at once)")
	f.IntVar(&maxNumSeqs, "max-num-seqs", 0, "requests running at once per replica, as vLLM's --max-num-seqs (default: sim.max_num_seqs of the config)")
	f.Float64Var(&kvTransferGbps, "kv-transfer-gbps", 0, "P/D KV transfer bandwidth per GPU in Gbit/s (default: sim.kv_transfer_gbps of the config, 400)")
	f.BoolVar(&kvEvents, "kv-events", false, "publish vLLM KV-cache events over ZMQ")
	f.StringVar(&kvEndpoint, "kv-events-endpoint", "tcp://127.0.0.1:5557", "ZMQ PUB address of replica 0")
	f.StringVar(&kvReplay, "kv-events-replay-endpoint", "", "ZMQ ROUTER replay address of replica 0 (empty: none)")
	f.StringVar(&kvEncoding, "kv-events-encoding", config.KVEventsEncodingMap, "event encoding: map (vLLM >= 0.24) or array")
	f.StringVar(&kvTopic, "kv-events-topic", "", "topic frame of KV-event messages")
	f.Float64Var(&faults.ErrorRate, "fault-error-rate", 0, "fraction in [0, 1] of inference requests answered with a vLLM 500 or 503 error JSON")
	f.Float64Var(&faults.ResetRate, "fault-reset-rate", 0, "fraction in [0, 1] of streams whose connection is cut mid-stream")
	f.IntVar(&faults.ResetAfter, "fault-reset-after", 0, "SSE events sent before a reset cuts the stream")
	f.Float64Var(&faults.HangRate, "fault-hang-rate", 0, "fraction in [0, 1] of inference requests that never answer until the client goes away")
	f.DurationVar(&coldStart, "cold-start", 0, "how long /health answers 503 after start (e.g. 30s)")
	return cmd
}

// simReplica is one started replica.
type simReplica struct {
	srv *sim.Server
	hs  *http.Server
	url string
}

// startSimReplicas starts n replicas of cfg, replica i serving HTTP on listen's port + i and KV
// events on cfg's endpoints offset by i. On error the replicas already started are stopped.
func startSimReplicas(cfg config.Sim, n int, listen string, log *slog.Logger) ([]*simReplica, error) {
	if n < 1 {
		return nil, fmt.Errorf("--replicas must be at least 1, got %d", n)
	}
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: port is not a number", listen)
	}
	var reps []*simReplica
	fail := func(err error) ([]*simReplica, error) {
		stopSimReplicas(reps)
		return nil, err
	}
	for i := range n {
		rc := cfg
		if rc.KVEventsEndpoint, err = sim.OffsetEndpointPort(cfg.KVEventsEndpoint, i); err != nil {
			return fail(err)
		}
		if rc.KVEventsReplayEndpoint, err = sim.OffsetEndpointPort(cfg.KVEventsReplayEndpoint, i); err != nil {
			return fail(err)
		}
		if cfg.KVTransferPort != 0 {
			rc.KVTransferPort = cfg.KVTransferPort + i // vLLM: VLLM_NIXL_SIDE_CHANNEL_PORT + data-parallel rank
		}
		name := "sim-" + strconv.Itoa(i)
		srv, err := sim.New(rc, name, clock.RealClock{}, prometheus.NewRegistry())
		if err != nil {
			return fail(err)
		}
		p := 0
		if port != 0 {
			p = port + i
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			srv.Close()
			return fail(fmt.Errorf("listen: %w", err))
		}
		r := &simReplica{srv: srv, hs: &http.Server{Handler: srv}, url: "http://" + ln.Addr().String()}
		reps = append(reps, r)
		go func() {
			if err := r.hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("replica stopped", "replica", name, "err", err)
			}
		}()
		log.Info("listening", "serves", "simulated vLLM replica", "replica", name, "url", r.url,
			"model", rc.ServedModelName, "gpu", rc.GPU, "kv_events", srv.KVEventsEndpoint(),
			"kv_events_replay", srv.KVEventsReplayEndpoint())
	}
	return reps, nil
}

func stopSimReplicas(reps []*simReplica) {
	for _, r := range reps {
		r.srv.Close() // first: it ends the requests still waiting on the engine
		_ = r.hs.Close()
	}
}
