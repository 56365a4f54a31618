package signature

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

// The worked example of datagrid-api.md, computed with
// printf '%s' "1775847600.<body>" | openssl dgst -sha256 -hmac whsec_test_5f1c
const (
	vectorSecret = "whsec_test_5f1c"
	vectorT      = 1775847600
	vectorBody   = `{"id":"evt_1","event_type":"batch_prediction.completed","timestamp":1775847600,"data":{}}`
	vectorSig    = "4acbf0169980ae2a35acaf218ec8fcba464bccc1af61cd8cabc887ad8a7d68f1"
)

var vectorNow = time.Unix(vectorT, 0)

func TestSignMatchesWorkedExample(t *testing.T) {
	got := Sign([]byte(vectorSecret), vectorT, []byte(vectorBody))
	want := "t=1775847600,v1=" + vectorSig
	if got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestVerify(t *testing.T) {
	secret := []Secret{NewSecret([]byte(vectorSecret), "")} // literals are tested below too
	other := Secret{Key: []byte("whsec_other")}
	wrong := strings.Repeat("0", 64)
	longT := strings.Repeat("0", 30) + "1775847600" // signed bytes are t as sent, leading zeros and all
	longSig := hex.EncodeToString(mac([]byte(vectorSecret), longT, []byte(vectorBody)))
	tol := 5 * time.Minute
	tests := []struct {
		name    string
		header  string
		body    string
		secrets []Secret
		now     time.Time
		want    error
	}{
		{"worked example", "t=1775847600,v1=" + vectorSig, vectorBody, secret, vectorNow, nil},
		{"spaces around entries", " t = 1775847600 , v1 = " + vectorSig + " ", vectorBody, secret, vectorNow, nil},
		{"unknown keys tolerated", "t=1775847600,v0=abc,scheme=x,v1=" + vectorSig + ",v2=zz", vectorBody, secret, vectorNow, nil},
		{"v1 first", "v1=" + vectorSig + ",t=1775847600", vectorBody, secret, vectorNow, nil},
		{"second of two v1 matches", "t=1775847600,v1=" + wrong + ",v1=" + vectorSig, vectorBody, secret, vectorNow, nil},
		{"t longer than 24 digits", "t=" + longT + ",v1=" + longSig, vectorBody, secret, vectorNow, nil},
		{"fourth of four v1 matches", "t=1775847600,v1=" + wrong + ",v1=" + wrong + ",v1=" + wrong + ",v1=" + vectorSig, vectorBody, secret, vectorNow, nil},
		{"third of three v1 matches", "t=1775847600,v1=" + wrong + ",v1=" + wrong + ",v1=" + vectorSig, vectorBody, secret, vectorNow, nil},
		{"second of two secrets matches", "t=1775847600,v1=" + vectorSig, vectorBody, []Secret{other, {Key: []byte(vectorSecret)}}, vectorNow, nil},
		{"uppercase hex accepted", "t=1775847600,v1=" + strings.ToUpper(vectorSig), vectorBody, secret, vectorNow, nil},
		{"entry without = tolerated", "t=1775847600,junk,v1=" + vectorSig, vectorBody, secret, vectorNow, nil},
		{"at the tolerance, past", "t=1775847600,v1=" + vectorSig, vectorBody, secret, vectorNow.Add(tol), nil},
		{"at the tolerance, future", "t=1775847600,v1=" + vectorSig, vectorBody, secret, vectorNow.Add(-tol), nil},

		{"empty header", "", vectorBody, secret, vectorNow, ErrNoSignature},
		{"blank header", "   ", vectorBody, secret, vectorNow, ErrNoSignature},
		{"no t", "v1=" + vectorSig, vectorBody, secret, vectorNow, ErrMalformed},
		{"no v1", "t=1775847600", vectorBody, secret, vectorNow, ErrMalformed},
		{"two t", "t=1775847600,t=1775847600,v1=" + vectorSig, vectorBody, secret, vectorNow, ErrMalformed},
		{"t not a number", "t=abc,v1=" + vectorSig, vectorBody, secret, vectorNow, ErrMalformed},
		{"t negative", "t=-1775847600,v1=" + vectorSig, vectorBody, secret, vectorNow, ErrMalformed},
		{"t with plus sign", "t=+1775847600,v1=" + vectorSig, vectorBody, secret, vectorNow, ErrMalformed},
		{"t zero", "t=0,v1=" + vectorSig, vectorBody, secret, vectorNow, ErrMalformed},
		{"t empty", "t=,v1=" + vectorSig, vectorBody, secret, vectorNow, ErrMalformed},
		{"t float", "t=1775847600.5,v1=" + vectorSig, vectorBody, secret, vectorNow, ErrMalformed},
		{"t overflow", "t=99999999999999999999,v1=" + vectorSig, vectorBody, secret, vectorNow, ErrMalformed},
		{"v1 not hex", "t=1775847600,v1=" + strings.Repeat("zz", 32), vectorBody, secret, vectorNow, ErrMalformed},
		{"v1 too short", "t=1775847600,v1=" + vectorSig[:62], vectorBody, secret, vectorNow, ErrMalformed},
		{"v1 too long", "t=1775847600,v1=" + vectorSig + "00", vectorBody, secret, vectorNow, ErrMalformed},
		{"v1 empty", "t=1775847600,v1=", vectorBody, secret, vectorNow, ErrMalformed},
		{"semicolons instead of commas", "t=1775847600;v1=" + vectorSig, vectorBody, secret, vectorNow, ErrMalformed},
		{"only commas", ",,,", vectorBody, secret, vectorNow, ErrMalformed},

		{"past the tolerance", "t=1775847600,v1=" + vectorSig, vectorBody, secret, vectorNow.Add(tol + time.Second), ErrStaleTimestamp},
		{"before the tolerance", "t=1775847600,v1=" + vectorSig, vectorBody, secret, vectorNow.Add(-tol - time.Second), ErrStaleTimestamp},

		{"wrong signature", "t=1775847600,v1=" + wrong, vectorBody, secret, vectorNow, ErrSignatureInvalid},
		{"unknown secret", "t=1775847600,v1=" + vectorSig, vectorBody, []Secret{other}, vectorNow, ErrSignatureInvalid},
		{"no secrets", "t=1775847600,v1=" + vectorSig, vectorBody, nil, vectorNow, ErrSignatureInvalid},
		{"body changed by one byte", "t=1775847600,v1=" + vectorSig, strings.Replace(vectorBody, "evt_1", "evt_2", 1), secret, vectorNow, ErrSignatureInvalid},
		{"body with trailing newline", "t=1775847600,v1=" + vectorSig, vectorBody + "\n", secret, vectorNow, ErrSignatureInvalid},
		{"t with leading zero is other signed bytes", "t=01775847600,v1=" + vectorSig, vectorBody, secret, vectorNow, ErrSignatureInvalid},
		{"signature of another t", "t=1775847601,v1=" + vectorSig, vectorBody, secret, vectorNow, ErrSignatureInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verify([]string{tt.header}, []byte(tt.body), tt.secrets, tt.now, tol)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// verify is Parse then Verify, as the delivery handler uses them.
func verify(lines []string, body []byte, secrets []Secret, now time.Time, tol time.Duration) error {
	s, err := Parse(lines, now, tol)
	if err != nil {
		return err
	}
	_, err = s.Verify(body, secrets)
	return err
}

func TestEveryV1OfEveryLineCounts(t *testing.T) {
	secret := []Secret{{Key: []byte(vectorSecret), WebhookID: "wh_1"}}
	junk := strings.Repeat(",v1="+strings.Repeat("0", 64), 40)
	tests := []struct {
		name  string
		lines []string
	}{
		// Defect: a valid v1 after 8 other entries was refused.
		{"valid v1 after 40 others", []string{"t=1775847600" + junk + ",v1=" + vectorSig}},
		// Defect: only the first Datagrid-Signature line was read.
		{"valid v1 on a second line", []string{"t=1775847600,v1=" + strings.Repeat("1", 64), "v1=" + vectorSig}},
		{"t on the second line", []string{"v1=" + vectorSig, "t=1775847600"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse(tt.lines, vectorNow, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Verify([]byte(vectorBody), secret)
			if err != nil || got.WebhookID != "wh_1" {
				t.Fatalf("got %+v, %v; want the secret of wh_1", got, err)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  error
	}{
		{"no line", nil, ErrNoSignature},
		{"blank lines", []string{" ", ""}, ErrNoSignature},
		{"t on two lines", []string{"t=1775847600,v1=" + vectorSig, "t=1775847600"}, ErrMalformed},
		{"header over the size bound", []string{"t=1775847600,v1=" + vectorSig + strings.Repeat(",x=y", MaxHeaderBytes/4)}, ErrTooLarge},
		{"lines over the size bound together", []string{strings.Repeat("x", MaxHeaderBytes/2), strings.Repeat("x", MaxHeaderBytes/2), "t=1775847600,v1=" + vectorSig}, ErrTooLarge},
		{"t far in the future", []string{"t=9223372036854775807,v1=" + vectorSig}, ErrStaleTimestamp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse(tt.lines, vectorNow, time.Minute); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestVerifyErrorsNeverCarrySecretsOrSignatures(t *testing.T) {
	for _, err := range []error{ErrNoSignature, ErrMalformed, ErrTooLarge, ErrStaleTimestamp, ErrSignatureInvalid} {
		if strings.Contains(err.Error(), vectorSecret) || strings.Contains(err.Error(), vectorSig) {
			t.Fatalf("error %q leaks a secret or signature", err)
		}
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add("t=1775847600,v1=" + vectorSig)
	f.Add(" t = 1 , v1 = " + vectorSig + ",v1=00")
	f.Add("t=,v1=")
	f.Add(",,,=,=")
	f.Fuzz(func(t *testing.T, h string) {
		p, err := Parse([]string{h}, time.Unix(1775847600, 0), 100*365*24*time.Hour)
		if err != nil {
			return
		}
		if p.t <= 0 || p.ts == "" || p.n == 0 || len(h) > MaxHeaderBytes {
			t.Fatalf("accepted %q as %+v", h, p)
		}
		// Whatever parses must go through Verify without panicking.
		_, _ = p.Verify([]byte("{}"), []Secret{{Key: []byte("k")}})
	})
}

func BenchmarkVerify(b *testing.B) {
	header := Sign([]byte(vectorSecret), vectorT, []byte(vectorBody))
	body := []byte(vectorBody)
	secrets := []Secret{NewSecret([]byte(vectorSecret), "")} // as the relay holds them: HMAC states reused
	lines := []string{header}
	b.ReportAllocs()
	for b.Loop() {
		if err := verify(lines, body, secrets, vectorNow, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
}
