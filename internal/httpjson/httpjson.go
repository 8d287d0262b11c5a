// Package httpjson writes and reads the JSON bodies of rekindle's HTTP APIs:
// indented replies, errors as {"error": "..."}, and strict request decoding.
package httpjson

import (
	"encoding/json"
	"io"
	"net/http"
)

// MaxBody bounds the request bodies Decode reads.
const MaxBody = 1 << 20

// Reply writes v as the JSON body of a reply with status code.
func Reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// Error replies {"error": msg} with status code.
func Error(w http.ResponseWriter, code int, msg string) {
	Reply(w, code, map[string]string{"error": msg})
}

// Decode reads one JSON value from r into v, refusing unknown fields and
// bodies over MaxBody.
func Decode(r io.Reader, v any) error {
	dec := json.NewDecoder(io.LimitReader(r, MaxBody))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
