package ingress

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/datagrid-relay/relay/internal/event"
)

// envelope is the part of a delivery the relay needs; the rest travels
// untouched.
type envelope struct {
	ID        string
	EventType string
	Time      time.Time
}

// MaxIDLen bounds an event id, which travels in message headers.
const MaxIDLen = 256

// Why a signed delivery is quarantined instead of routed. Each is short and
// fixed: it travels as the Datagrid-Quarantine-Reason header.
var (
	errNotJSON       = errors.New("body is not a JSON object")
	errNoID          = errors.New("envelope has no id")
	errBadID         = errors.New("envelope id must be a string of 1-256 visible ASCII characters")
	errNoEventType   = errors.New("envelope has no event_type")
	errBadEventType  = errors.New("envelope event_type is not a safe subject token")
	errDuplicateKey  = errors.New("envelope has more than one copy of id, event_type or timestamp")
	errCaseVariant   = errors.New("envelope has a case variant of id, event_type or timestamp")
	errBadFieldTypes = errors.New("envelope id and event_type must be strings")
)

// The envelope's keys, read by exact name.
var envelopeKeys = [...]string{"id", "event_type", "timestamp"}

// parseEnvelope reads id, event_type and timestamp from the top level of a
// JSON object, by exact name. A body that a strict and a lenient JSON reader
// could route differently is refused: two copies of a key (encoding/json
// takes the last, others the first) or a key equal to one of them but for
// case (encoding/json matches those too, Unicode folding included). It
// returns what it could read even with an error: the id, when usable, keys
// the quarantined copy.
func parseEnvelope(body []byte) (envelope, error) {
	var raw [len(envelopeKeys)][]byte
	var problem error
	i := skipSpace(body, 0)
	if i == len(body) || body[i] != '{' {
		return envelope{}, errNotJSON
	}
	end, ok := scanMembers(body, i, 1, func(key, value []byte) {
		if problem == nil {
			problem = noteKey(&raw, key, value)
		}
	})
	if !ok || skipSpace(body, end) != len(body) {
		return envelope{}, errNotJSON
	}

	var env envelope
	id, okID := jsonString(raw[0])
	if validID(id) {
		env.ID = id
	}
	switch {
	case problem != nil:
		return env, problem
	case raw[0] == nil || bytes.Equal(raw[0], []byte("null")):
		return env, errNoID
	case raw[1] == nil || bytes.Equal(raw[1], []byte("null")):
		return env, errNoEventType
	}
	et, okType := eventTypeString(raw[1])
	switch {
	case !okID || !okType:
		return env, errBadFieldTypes
	case !validID(id):
		return env, errBadID
	case !event.ValidType(et):
		return env, errBadEventType
	}
	env.EventType = et
	env.Time = parseTimestamp(raw[2])
	return env, nil
}

// noteKey records value under key if key is one of the envelope's, and
// reports a duplicate or a case variant.
func noteKey(raw *[len(envelopeKeys)][]byte, rawKey, value []byte) error {
	key := string(rawKey)
	if bytes.IndexByte(rawKey, '\\') >= 0 {
		var s string
		if json.Unmarshal(append(append([]byte{'"'}, rawKey...), '"'), &s) == nil {
			key = s // "\u0069d" is "id" to every JSON reader
		}
	}
	for k, name := range envelopeKeys {
		switch {
		case key == name && raw[k] != nil:
			return errDuplicateKey
		case key == name:
			raw[k] = value
		case strings.EqualFold(key, name):
			return errCaseVariant
		}
	}
	return nil
}

// eventTypeString is jsonString that hands out the known event types
// without allocating.
func eventTypeString(v []byte) (string, bool) {
	if len(v) >= 2 && v[0] == '"' {
		if known, ok := event.Intern(v[1 : len(v)-1]); ok {
			return known, true
		}
	}
	return jsonString(v)
}

// jsonString decodes a JSON string value; false when v is not a string.
func jsonString(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(v, '\\') < 0 {
		return string(v[1 : len(v)-1]), true
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return "", false
	}
	return s, true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// validID accepts ids that are safe as header values: visible ASCII only,
// so no id can smuggle a line break into the message headers.
func validID(id string) bool {
	if id == "" || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// maxUnixSeconds is the start of year 10000, past any real event time.
const maxUnixSeconds = 253402300800

// parseTimestamp reads Unix seconds; anything else yields the zero time and
// the message simply goes without ce-time.
func parseTimestamp(raw []byte) time.Time {
	if len(raw) == 0 {
		return time.Time{}
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f <= 0 || f >= maxUnixSeconds {
		return time.Time{}
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC()
}
