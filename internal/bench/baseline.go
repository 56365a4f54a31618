package bench

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BaselineConfig is what the hand-written baseline relay needs.
type BaselineConfig struct {
	JS        jetstream.JetStream
	Secret    []byte
	Stream    string // stream that captures Prefix + ".>"
	Prefix    string // subject = Prefix + "." + event type
	Source    string // ce-source
	Tolerance time.Duration
}

// NewBaseline is the relay a user would write by hand in an afternoon, the
// yardstick of issue 10: HMAC verification, json.Unmarshal of the envelope,
// one synchronous JetStream publish per delivery with the relay's headers,
// no metrics, no logging. It keeps the relay's promise (2xx only after the
// ack) so the comparison is fair.
func NewBaseline(cfg BaselineConfig) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "use POST", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		if !verify(r.Header.Get(SignatureHeader), body, cfg.Secret, time.Now(), cfg.Tolerance) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var env struct {
			ID        string `json:"id"`
			EventType string `json:"event_type"`
			Timestamp int64  `json:"timestamp"`
		}
		if err := json.Unmarshal(body, &env); err != nil || env.ID == "" || env.EventType == "" {
			http.Error(w, "malformed envelope", http.StatusBadRequest)
			return
		}
		msg := nats.NewMsg(cfg.Prefix + "." + env.EventType)
		msg.Data = body
		msg.Header.Set(jetstream.MsgIDHeader, env.ID)
		msg.Header.Set("Content-Type", "application/json")
		msg.Header.Set("ce-specversion", "1.0")
		msg.Header.Set("ce-id", env.ID)
		msg.Header.Set("ce-type", env.EventType)
		msg.Header.Set("ce-source", cfg.Source)
		if env.Timestamp > 0 {
			msg.Header.Set("ce-time", time.Unix(env.Timestamp, 0).UTC().Format(time.RFC3339))
		}
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		ack, err := cfg.JS.PublishMsg(ctx, msg, jetstream.WithExpectStream(cfg.Stream))
		if err != nil {
			w.Header().Set("Retry-After", "5")
			http.Error(w, "not stored, retry", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if ack.Duplicate {
			_, _ = io.WriteString(w, `{"status":"duplicate"}`+"\n")
			return
		}
		_, _ = io.WriteString(w, `{"status":"stored"}`+"\n")
	})
}

// verify checks a Datagrid-Signature header the straightforward way.
func verify(header string, body, secret []byte, now time.Time, tolerance time.Duration) bool {
	var ts string
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || now.Sub(time.Unix(t, 0)).Abs() > tolerance {
		return false
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts + "."))
	m.Write(body)
	want := m.Sum(nil)
	for _, s := range sigs {
		if got, err := hex.DecodeString(s); err == nil && hmac.Equal(got, want) {
			return true
		}
	}
	return false
}

// EnsureStream creates stream capturing prefix.> with the settings the
// relay gives the stream it creates (file storage, one replica, 168h
// retention, 24h duplicate window), or adopts it when it exists.
func EnsureStream(ctx context.Context, js jetstream.JetStream, stream, prefix string) error {
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       stream,
		Subjects:   []string{prefix + ".>"},
		Storage:    jetstream.FileStorage,
		Replicas:   1,
		MaxAge:     168 * time.Hour,
		Duplicates: 24 * time.Hour,
		Discard:    jetstream.DiscardOld,
	})
	if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("create stream %s: %w", stream, err)
	}
	return nil
}

// NewBare is the HTTP ceiling: it reads the body and answers 204.
func NewBare() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	})
}
