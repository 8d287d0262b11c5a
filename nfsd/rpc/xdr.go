package rpc

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrShort means an XDR item runs past the end of its input.
var ErrShort = errors.New("xdr: input too short")

// ErrTooLong means a variable-length XDR item declares more bytes than allowed.
var ErrTooLong = errors.New("xdr: item longer than allowed")

// Decoder reads XDR items from a byte slice. The first failure sticks: later reads
// return zero values and Err reports the failure, so a caller decodes a whole
// structure and checks once.
type Decoder struct {
	b   []byte
	off int
	err error
}

// NewDecoder decodes b.
func NewDecoder(b []byte) *Decoder { return &Decoder{b: b} }

// Err is the first failure, or nil.
func (d *Decoder) Err() error { return d.err }

// Offset is how many bytes have been consumed.
func (d *Decoder) Offset() int { return d.off }

// Remaining is how many bytes are left.
func (d *Decoder) Remaining() int { return len(d.b) - d.off }

func (d *Decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b)-d.off {
		d.err = fmt.Errorf("%w: need %d bytes at offset %d, have %d", ErrShort, n, d.off, len(d.b)-d.off)
		return nil
	}
	s := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return s
}

// Uint32 reads an unsigned int.
func (d *Decoder) Uint32() uint32 {
	s := d.take(4)
	if s == nil {
		return 0
	}
	return binary.BigEndian.Uint32(s)
}

// Uint64 reads an unsigned hyper.
func (d *Decoder) Uint64() uint64 {
	s := d.take(8)
	if s == nil {
		return 0
	}
	return binary.BigEndian.Uint64(s)
}

// Bool reads a bool; values other than 0 and 1 are an error.
func (d *Decoder) Bool() bool {
	v := d.Uint32()
	if v > 1 && d.err == nil {
		d.err = fmt.Errorf("xdr: bool value %d", v)
	}
	return v == 1
}

// Fixed reads n bytes of fixed-length opaque data and its padding.
func (d *Decoder) Fixed(n int) []byte {
	s := d.take(n)
	if d.err == nil {
		d.take(pad(n))
	}
	return s
}

// Opaque reads variable-length opaque data of at most max bytes. The result
// aliases the input.
func (d *Decoder) Opaque(max int) []byte {
	n := d.Uint32()
	if d.err != nil {
		return nil
	}
	if uint64(n) > uint64(max) {
		d.err = fmt.Errorf("%w: %d bytes, limit %d", ErrTooLong, n, max)
		return nil
	}
	if int(n) > len(d.b)-d.off {
		d.err = fmt.Errorf("%w: opaque of %d bytes at offset %d, have %d", ErrShort, n, d.off, len(d.b)-d.off)
		return nil
	}
	s := d.Fixed(int(n))
	if s == nil && d.err == nil {
		s = []byte{}
	}
	return s
}

// String reads a string of at most max bytes.
func (d *Decoder) String(max int) string { return string(d.Opaque(max)) }

func pad(n int) int { return (4 - n%4) % 4 }

// Encoder appends XDR items to a byte slice.
type Encoder struct{ b []byte }

// Bytes is everything encoded so far.
func (e *Encoder) Bytes() []byte { return e.b }

// Uint32 appends an unsigned int.
func (e *Encoder) Uint32(v uint32) { e.b = binary.BigEndian.AppendUint32(e.b, v) }

// Uint64 appends an unsigned hyper.
func (e *Encoder) Uint64(v uint64) { e.b = binary.BigEndian.AppendUint64(e.b, v) }

// Bool appends a bool.
func (e *Encoder) Bool(v bool) {
	if v {
		e.Uint32(1)
	} else {
		e.Uint32(0)
	}
}

// Opaque appends variable-length opaque data.
func (e *Encoder) Opaque(b []byte) {
	e.Uint32(uint32(len(b)))
	e.Fixed(b)
}

// Fixed appends fixed-length opaque data and its padding.
func (e *Encoder) Fixed(b []byte) {
	e.b = append(e.b, b...)
	e.b = append(e.b, make([]byte, pad(len(b)))...)
}

// String appends a string.
func (e *Encoder) String(s string) { e.Opaque([]byte(s)) }

// Raw appends bytes that are already XDR.
func (e *Encoder) Raw(b []byte) { e.b = append(e.b, b...) }
