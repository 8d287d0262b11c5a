package orchestrator

import (
	"bytes"
	"encoding/json"
	"time"
)

// The JSON forms here follow docs/json.md: durations are numbers of seconds
// in keys ending "_s", lists are [] when empty. Plans are stored with their
// sessions, so a catalog written before that rule still loads: its
// "ready_timeout" (nanoseconds) is read too.

type plainRequest Request

// MarshalJSON writes ReadyTimeout as ready_timeout_s.
func (r Request) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		plainRequest
		ReadyTimeoutSeconds float64 `json:"ready_timeout_s,omitempty"`
	}{plainRequest(r), r.ReadyTimeout.Seconds()})
}

// UnmarshalJSON reads ready_timeout_s, or the old ready_timeout in
// nanoseconds. It refuses unknown keys, as the API's request decoding does.
func (r *Request) UnmarshalJSON(b []byte) error {
	var v struct {
		plainRequest
		ReadyTimeoutSeconds *float64 `json:"ready_timeout_s"`
		LegacyReadyTimeout  *int64   `json:"ready_timeout"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return err
	}
	*r = Request(v.plainRequest)
	switch {
	case v.ReadyTimeoutSeconds != nil:
		r.ReadyTimeout = time.Duration(*v.ReadyTimeoutSeconds * float64(time.Second))
	case v.LegacyReadyTimeout != nil:
		r.ReadyTimeout = time.Duration(*v.LegacyReadyTimeout)
	}
	return nil
}

// MarshalJSON writes missing disks and NICs as [] rather than null.
func (s VMSpec) MarshalJSON() ([]byte, error) {
	type plain VMSpec
	p := plain(s)
	if p.Disks == nil {
		p.Disks = []DiskSpec{}
	}
	if p.NICs == nil {
		p.NICs = []NICSpec{}
	}
	return json.Marshal(p)
}
