package ingress

import (
	"encoding/json"
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
	f.Fuzz(func(t *testing.T, body []byte) {
		env, err := parseEnvelope(body)
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
