package ingress_test

import (
	"bytes"
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/datagrid-relay/relay/internal/signature"
)

// FuzzHandler posts arbitrary bodies, either correctly signed or with an
// arbitrary signature header, to the handler in front of a real JetStream
// server. Whatever comes in, the answer is one the contract allows, a
// refusal stores nothing, and a new 2xx stores the exact body.
func FuzzHandler(f *testing.F) {
	f.Add([]byte(`{"id":"evt_1","event_type":"batch_prediction.completed","timestamp":1775847600,"data":{}}`), "")
	f.Add([]byte(`{"id":"evt_2","event_type":"knowledge.processing.completed","data":{"row_counts":{"rows":1}}}`), "t=1,v1=00")
	f.Add([]byte(`{"id":"evt\n","event_type":"a.b"}`), "")
	f.Add([]byte(`[]`), "")
	f.Add([]byte(`{"id":"x","event_type":"a..b"}`), "v1=zz,t=-1")
	f.Add([]byte(``), "t=1775847600")

	fx := newFixture(f, fixtureOpts{})
	f.Fuzz(func(t *testing.T, body []byte, header string) {
		allowed := []int{200} // signed: stored, duplicate or quarantined, never refused
		sig := signature.Sign([]byte(testSecret), fx.now.Unix(), body)
		if header != "" {
			sig, allowed = header, []int{200, 401}
		}
		before := storedIn(t, fx.js)

		req, err := http.NewRequest(http.MethodPost, fx.url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(signature.Header, sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			if strings.Contains(err.Error(), "invalid header field value") {
				t.Skip("the HTTP client refuses to send this header")
			}
			t.Fatal(err)
		}
		resp.Body.Close()
		if !slices.Contains(allowed, resp.StatusCode) {
			t.Fatalf("got status %d for body %q header %q, want one of %v", resp.StatusCode, body, header, allowed)
		}

		after := storedIn(t, fx.js)
		switch {
		case resp.StatusCode != http.StatusOK && after != before:
			t.Fatalf("status %d but the stream grew from %d to %d", resp.StatusCode, before, after)
		case resp.StatusCode == http.StatusOK && after == before+1:
			s, err := fx.js.Stream(context.Background(), testStream)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := s.GetMsg(context.Background(), after)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(raw.Data, body) {
				t.Fatalf("stored %q, want %q", raw.Data, body)
			}
		}
	})
}
