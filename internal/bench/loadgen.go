package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// LoadConfig describes one bounded load run against one target.
type LoadConfig struct {
	URL         string // loopback only
	Secret      []byte
	Concurrency int // workers, each with its own keep-alive connection
	BodySize    int // bytes per delivery body (at least the envelope's size)
	Warmup      time.Duration
	Duration    time.Duration // measured phase, after the warm-up
	MaxRequests int           // bound on requests, warm-up included
	// ResendEvery makes every n-th request of a worker re-send a delivery
	// already answered 2xx (a Datagrid retry, signed again); 0 never.
	ResendEvery int
	IDPrefix    string // event ids are IDPrefix + a sequence number
	// OnMeasure, if set, is called once when the measured phase starts.
	OnMeasure func()
}

// LoadResult is what one load run saw.
type LoadResult struct {
	Requests  int           // completed in the measured phase
	Elapsed   time.Duration // from the start of the measured phase to the last answer
	Latencies []time.Duration
	Status    map[int]int // every request, warm-up included; 0 is a transport error
	Resent    int         // re-sent deliveries, warm-up included
	Acked     []string    // distinct event ids answered 2xx
	FirstErr  string      // first transport error or unexpected status, for the log
}

// Rate is the measured deliveries per second.
func (r LoadResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// Percentile is latency quantile q (0..1) of the measured phase.
func (r LoadResult) Percentile(q float64) time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	i := int(q * float64(len(r.Latencies)))
	return r.Latencies[min(i, len(r.Latencies)-1)]
}

// Max is the slowest answer of the measured phase.
func (r LoadResult) Max() time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	return r.Latencies[len(r.Latencies)-1]
}

type sample struct {
	end    time.Duration // since the run started
	lat    time.Duration
	status int
}

type sent struct {
	id   string
	body []byte
}

// CheckLoopback refuses any URL whose host is not a loopback address: the
// load generator never leaves the machine.
func CheckLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("parse url: %w", err)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("url %s is not on a loopback address", raw)
}

// Load runs cfg: Concurrency workers, each on its own keep-alive
// connection, post signed deliveries with distinct
// ids (and every ResendEvery-th a re-sent one) until Warmup+Duration has
// passed, MaxRequests were sent or ctx ends, then waits for the answers in
// flight. It always stops by itself.
func Load(ctx context.Context, cfg LoadConfig) (LoadResult, error) {
	if err := CheckLoopback(cfg.URL); err != nil {
		return LoadResult{}, err
	}
	if cfg.Concurrency < 1 || cfg.MaxRequests < 1 || cfg.Duration <= 0 {
		return LoadResult{}, errors.New("load: concurrency, max requests and duration must be positive")
	}
	if _, err := newClient(cfg.URL, time.Second); err != nil {
		return LoadResult{}, err
	}
	start := time.Now()
	stopAt := start.Add(cfg.Warmup + cfg.Duration)
	measured := make(chan struct{})
	measure := time.AfterFunc(cfg.Warmup, func() {
		defer close(measured)
		if cfg.OnMeasure != nil {
			cfg.OnMeasure()
		}
	})
	defer func() {
		if !measure.Stop() {
			<-measured // the caller may read what OnMeasure wrote
		}
	}()

	tmpl := newBodyTemplate(cfg.BodySize, start.Unix())
	var issued atomic.Int64
	var mu sync.Mutex
	res := LoadResult{Status: map[int]int{}}
	var all []sample
	var wg sync.WaitGroup
	for w := range cfg.Concurrency {
		wg.Go(func() {
			cl, _ := newClient(cfg.URL, 30*time.Second) // checked above
			defer cl.close()
			var own []sample
			status := map[int]int{}
			var acked []string
			var recent []sent // a ring of deliveries answered 2xx, for re-sends
			resent, firstErr := 0, ""
			for n := 0; ; n++ {
				if ctx.Err() != nil || !time.Now().Before(stopAt) || issued.Add(1) > int64(cfg.MaxRequests) {
					break
				}
				var d sent
				resend := cfg.ResendEvery > 0 && n%cfg.ResendEvery == cfg.ResendEvery-1 && len(recent) > 0
				if resend {
					d = recent[n%len(recent)]
					resent++
				} else {
					d.id = cfg.IDPrefix + strconv.Itoa(w) + "_" + strconv.Itoa(n)
					d.body = tmpl.body(d.id)
				}
				t0 := time.Now()
				code, err := cl.post(Sign(cfg.Secret, time.Now().Unix(), d.body), d.body)
				t1 := time.Now()
				if err != nil && firstErr == "" {
					firstErr = err.Error()
				}
				status[code]++
				own = append(own, sample{end: t1.Sub(start), lat: t1.Sub(t0), status: code})
				if code >= 200 && code < 300 && !resend {
					acked = append(acked, d.id)
					if len(recent) < 64 {
						recent = append(recent, d)
					} else {
						recent[n%64] = d
					}
				}
				if (code < 200 || code >= 300) && code != 0 && firstErr == "" {
					firstErr = "status " + strconv.Itoa(code)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			all = append(all, own...)
			for k, v := range status {
				res.Status[k] += v
			}
			res.Acked = append(res.Acked, acked...)
			res.Resent += resent
			if res.FirstErr == "" {
				res.FirstErr = firstErr
			}
		})
	}
	wg.Wait()

	var last time.Duration
	for _, s := range all {
		if s.end >= cfg.Warmup {
			res.Latencies = append(res.Latencies, s.lat)
			last = max(last, s.end)
		}
	}
	slices.Sort(res.Latencies)
	res.Requests = len(res.Latencies)
	if res.Requests > 0 {
		res.Elapsed = last - cfg.Warmup
	}
	return res, nil
}

// bodyTemplate builds realistic batch_prediction.completed envelopes padded
// to a fixed size.
type bodyTemplate struct {
	size int
	ts   string
}

func newBodyTemplate(size int, ts int64) bodyTemplate {
	return bodyTemplate{size: size, ts: strconv.FormatInt(ts, 10)}
}

// body is the envelope of event id, padded with a metadata note to the
// template's size when it is smaller.
func (t bodyTemplate) body(id string) []byte {
	head := `{"id":"` + id + `","event_type":"batch_prediction.completed","timestamp":` + t.ts +
		`,"data":{"object":"batch_prediction","id":"bpred_` + id + `","status":"completed","request_counts":{"succeeded":118,"errored":2},"results_url":"/v1/batch-predictions/bpred_` + id + `/results","metadata":{"note":"`
	const tail = `"}}}`
	b := make([]byte, 0, max(t.size, len(head)+len(tail)))
	b = append(b, head...)
	for range t.size - len(head) - len(tail) {
		b = append(b, 'x')
	}
	return append(b, tail...)
}
