package ingress

import (
	"errors"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	errTooLarge   = errors.New("body too large")
	errOverBudget = errors.New("memory budget for bodies spent")
)

// budget bounds the memory held for delivery bodies at once. Memory is
// taken as bytes actually arrive, never on the client's word
// (Content-Length): a client that declares a megabyte and sends nothing
// holds nothing.
type budget struct {
	max   int64
	used  atomic.Int64
	gauge prometheus.Gauge
}

func newBudget(max int64, gauge prometheus.Gauge) *budget {
	return &budget{max: max, gauge: gauge}
}

func (b *budget) take(n int64) bool {
	if b.used.Add(n) > b.max {
		b.used.Add(-n)
		return false
	}
	b.gauge.Add(float64(n))
	return true
}

func (b *budget) give(n int64) {
	b.used.Add(-n)
	b.gauge.Sub(float64(n))
}

// firstChunk is the buffer a body starts in: most deliveries fit.
const firstChunk = 8 << 10

// read reads all of r, at most limit bytes, growing its buffer as bytes
// arrive and taking each growth from the budget first. release gives the
// memory back; call it (also on error) once the body is no longer used.
func (b *budget) read(r io.Reader, limit int64) (body []byte, release func(), err error) {
	var held int64
	release = func() { b.give(held) }
	grow := func(size int64) bool {
		if !b.take(size) {
			return false
		}
		held += size
		return true
	}
	size := min(int64(firstChunk), limit+1) // +1: a body of exactly limit reads EOF without growing
	if !grow(size) {
		return nil, release, errOverBudget
	}
	buf := make([]byte, 0, size)
	for {
		if int64(len(buf)) == int64(cap(buf)) {
			if int64(len(buf)) > limit {
				return nil, release, errTooLarge
			}
			next := min(2*int64(cap(buf)), limit+1)
			if !grow(next) { // the old buffer is held until the copy is done
				return nil, release, errOverBudget
			}
			old := int64(cap(buf))
			buf = append(make([]byte, 0, next), buf...)
			b.give(old)
			held -= old
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, release, errTooLarge
			}
			return nil, release, err
		}
	}
	if int64(len(buf)) > limit {
		return nil, release, errTooLarge
	}
	return buf, release, nil
}
