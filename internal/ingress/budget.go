package ingress

import (
	"errors"
	"io"
	"net/http"
	"sync"
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

// firstChunks recycles the first buffers of bodies: most deliveries need
// nothing else.
var firstChunks = sync.Pool{New: func() any { return new([firstChunk]byte) }}

// lease is the memory one body holds: give it back with release.
type lease struct {
	b     *budget
	held  int64
	first *[firstChunk]byte // pooled, while in use
}

// release gives the memory back; the body's buffer may then be reused.
func (l *lease) release() {
	l.b.give(l.held)
	l.held = 0
	if l.first != nil {
		firstChunks.Put(l.first)
		l.first = nil
	}
}

func (l *lease) grow(size int64) bool {
	if !l.b.take(size) {
		return false
	}
	l.held += size
	return true
}

// read reads all of r, at most limit bytes, growing its buffer as bytes
// arrive and taking each growth from the budget first, so that the budget
// holds the capacity of every body buffer alive (a body of limit bytes needs
// limit of budget, no more). A declared contentLength over the limit is
// refused before anything is read: a refusal on the client's word, never a
// reservation. Call l.release (also on error) once the body is no longer
// used.
func (b *budget) read(r io.Reader, contentLength, limit int64, l *lease) (body []byte, err error) {
	l.b = b
	if contentLength > limit {
		return nil, errTooLarge
	}
	size := min(int64(firstChunk), max(limit, 1))
	if !l.grow(size) {
		return nil, errOverBudget
	}
	var buf []byte
	if size == firstChunk {
		l.first = firstChunks.Get().(*[firstChunk]byte)
		buf = l.first[:0]
	} else {
		buf = make([]byte, 0, size)
	}
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) >= limit {
				return buf, probeEOF(r) // full at the limit: one byte more is too large
			}
			next := min(2*int64(cap(buf)), limit)
			if !l.grow(next - int64(cap(buf))) { // the old buffer is garbage once copied
				return nil, errOverBudget
			}
			buf = append(make([]byte, 0, next), buf...)
			if l.first != nil {
				firstChunks.Put(l.first)
				l.first = nil
			}
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, readError(err)
		}
	}
}

// probeEOF reports nil when r has nothing more, errTooLarge when it has.
func probeEOF(r io.Reader) error {
	var probe [1]byte
	for {
		n, err := r.Read(probe[:])
		switch {
		case n > 0:
			return errTooLarge
		case err == io.EOF:
			return nil
		case err != nil:
			return readError(err)
		}
	}
}

func readError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return errTooLarge
	}
	return err
}
