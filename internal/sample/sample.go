// Package sample makes realistic Datagrid deliveries, as `relay trigger`
// and `relay demo` send them: the envelope of datagrid-api.md around a full
// batch prediction object or a knowledge processing summary.
package sample

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/datagrid-relay/relay/internal/signature"
)

// Send posts body to url signed with secret at signedAt, as Datagrid
// delivers, and returns the status and the answer's body (trimmed, at most
// 4 KiB).
func Send(ctx context.Context, url, secret string, body []byte, signedAt time.Time) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "datagrid-relay-sample")
	req.Header.Set(signature.Header, signature.Sign([]byte(secret), signedAt.Unix(), body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, strings.TrimSpace(string(answer)), err
}

// Delivery returns the JSON body of a delivery of eventType with event id
// id, happening at now. seq varies the objects' ids and counts.
func Delivery(eventType, id string, seq int, now time.Time) []byte {
	env := struct {
		ID        string `json:"id"`
		EventType string `json:"event_type"`
		Timestamp int64  `json:"timestamp"`
		Data      any    `json:"data"`
	}{id, eventType, now.Unix(), data(eventType, seq, now)}
	b, err := json.Marshal(env)
	if err != nil {
		panic(err) // only plain values: cannot happen
	}
	return b
}

func data(eventType string, seq int, now time.Time) any {
	switch {
	case eventType == "knowledge.processing.completed":
		return map[string]any{
			"knowledge_id": fmt.Sprintf("kn_%06d", 1000+seq),
			"teamspace_id": "ts_acme",
			"scope":        "teamspace",
			"status":       "ready",
			"row_counts":   map[string]int{"tables": 2 + seq%3, "rows": 1000 * (1 + seq%7)},
		}
	case strings.HasPrefix(eventType, "batch_prediction."):
		return batchPrediction(strings.TrimPrefix(eventType, "batch_prediction."), seq, now)
	default:
		return map[string]any{"note": "sample data for an event type the relay does not know yet"}
	}
}

func batchPrediction(status string, seq int, now time.Time) map[string]any {
	id := fmt.Sprintf("bpred_%06d", 4200+seq)
	created := now.Add(-47 * time.Minute).UTC()
	ts := func(d time.Duration) any { return created.Add(d).Format(time.RFC3339) }
	total := 100 + 10*(seq%9)
	counts := map[string]int{"succeeded": 0, "errored": 0, "processing": 0, "canceled": 0, "expired": 0}
	obj := map[string]any{
		"object":         "batch_prediction",
		"id":             id,
		"status":         status,
		"model":          "datagrid-agent-2",
		"created_at":     ts(0),
		"expires_at":     ts(24 * time.Hour),
		"in_progress_at": ts(time.Minute),
		"completed_at":   nil, "failed_at": nil, "expired_at": nil, "cancelled_at": nil,
		"results_url": nil,
		"metadata":    map[string]string{"pipeline": "nightly-scoring", "run": fmt.Sprint(seq)},
		"error":       nil,
	}
	end := ts(46 * time.Minute)
	switch status {
	case "completed":
		counts["succeeded"], counts["errored"] = total-2, 2
		obj["completed_at"] = end
		obj["results_url"] = "/v1/batch-predictions/" + id + "/results"
	case "failed":
		counts["errored"] = total
		obj["failed_at"] = end
		obj["error"] = map[string]any{"status": 422, "title": "Invalid input file", "type": "https://docs.datagrid.com/errors/invalid-input", "detail": "row 17: missing column \"prompt\""}
	case "expired":
		counts["succeeded"], counts["expired"] = total/2, total-total/2
		obj["expired_at"] = end
	case "cancelled":
		counts["succeeded"], counts["canceled"] = total/3, total-total/3
		obj["cancelled_at"] = end
	}
	obj["request_counts"] = counts
	return obj
}
