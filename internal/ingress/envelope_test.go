package ingress

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzEnvelope checks the envelope reader against encoding/json: whatever
// parseEnvelope routes, a lenient JSON reader reads the same id and
// event_type from it (so no body can be routed one way by the relay and
// read another way by a subscriber), and whatever it refuses, it refuses
// without panicking.
func FuzzEnvelope(f *testing.F) {
	f.Add([]byte(`{"id":"evt_1","event_type":"batch_prediction.completed","timestamp":1775847600,"data":{}}`))
	f.Add([]byte(`{"id":"evt_1","event_type":"a.b","EVENT_TYPE":"c.d"}`))
	f.Add([]byte(`{"id":"evt_1","event_type":"a.b","event_type":"c.d"}`))
	f.Add([]byte(`{"\u0069d":"evt_1","event_type":"a.b"}`))
	f.Add([]byte(`{"id":"e\"v","event_type":"a.b","data":{"id":"x","event_type":"y"}}`))
	f.Add([]byte(` {"id":"e","event_type":"a.b","timeſtamp":3} `))
	f.Add([]byte(`[{"id":"e","event_type":"a.b"}]`))
	f.Add([]byte(`{"a":[1,-0.5e+3,true,false,null,"\u00e9\n"]}`))
	f.Add([]byte(`{"a":01}`))
	f.Add([]byte("{\"a\":\"\x01\"}"))
	f.Fuzz(func(t *testing.T, body []byte) {
		if got, want := validJSON(body), json.Valid(body); got != want {
			t.Fatalf("validJSON(%q) = %v, encoding/json says %v", body, got, want)
		}
		env, err := parseEnvelope(body)
		if !json.Valid(body) && !errors.Is(err, errNotJSON) {
			t.Fatalf("parseEnvelope(%q) = %v for invalid JSON, want errNotJSON", body, err)
		}
		if err != nil {
			return
		}
		var lenient struct {
			ID        string `json:"id"`
			EventType string `json:"event_type"`
		}
		if jerr := json.Unmarshal(body, &lenient); jerr != nil {
			t.Fatalf("routed %q, which encoding/json refuses: %v", body, jerr)
		}
		if lenient.ID != env.ID || lenient.EventType != env.EventType {
			t.Fatalf("routed %q as (%q, %q); encoding/json reads (%q, %q)", body, env.ID, env.EventType, lenient.ID, lenient.EventType)
		}
	})
}

func TestValidJSONAgreesWithEncodingJSON(t *testing.T) {
	deep := func(n int) []byte {
		b := make([]byte, 0, 2*n)
		for range n {
			b = append(b, '[')
		}
		for range n {
			b = append(b, ']')
		}
		return b
	}
	for _, in := range [][]byte{
		nil, []byte(` `), []byte(`{}`), []byte(`[]`), []byte(`{"a":1}`), []byte(`{"a":1,}`), []byte(`{"a" 1}`),
		[]byte(`[1,2`), []byte(`"\u12"`), []byte(`"\u1234"`), []byte(`"\x"`), []byte(`-`), []byte(`-0`), []byte(`1.`),
		[]byte(`1e5`), []byte(`1E-5`), []byte(`1e`), []byte(`tru`), []byte(`true false`), []byte("\"\xff\""),
		[]byte(`{"a":{"b":[{"c":null}]}}`), []byte(` {"a":"b"} `), []byte(`{"a":"b"}x`),
		deep(10000), deep(10001),
	} {
		if got, want := validJSON(in), json.Valid(in); got != want {
			t.Errorf("validJSON(%.40q) = %v, encoding/json says %v", in, got, want)
		}
	}
}

// BenchmarkValidJSON compares the envelope's validity check with
// encoding/json's on a realistic 1 KiB delivery, side by side in one run.
func BenchmarkValidJSON(b *testing.B) {
	body := []byte(`{"id":"evt_7f3d8a2c","event_type":"batch_prediction.completed","timestamp":1775847600,"data":{"object":"batch_prediction","id":"bpred_abc123","status":"completed","model":"dg-large","created_at":"2026-04-10T18:00:00Z","expires_at":null,"request_counts":{"succeeded":118,"errored":2,"processing":0,"canceled":0,"expired":0},"results_url":"/v1/batch-predictions/bpred_abc123/results","metadata":{"team":"forecasting","note":"` + strings.Repeat("x", 600) + `"},"error":null}}`)
	b.Run("validJSON", func(b *testing.B) {
		for b.Loop() {
			validJSON(body)
		}
	})
	b.Run("encoding/json.Valid", func(b *testing.B) {
		for b.Loop() {
			json.Valid(body)
		}
	})
}
