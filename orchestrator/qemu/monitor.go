package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

// qmpGreetTimeout bounds the wait for QEMU's QMP greeting. QEMU serves one
// monitor client at a time: another process holding the socket (a second
// rekindle) shows up as a missing greeting.
const qmpGreetTimeout = 10 * time.Second

// monitor is one QMP connection, with its events pumped into a buffer so
// that go-qemu's reader never blocks on them.
type monitor struct {
	sock   string
	mon    *qmp.SocketMonitor
	events chan qmp.Event
	once   sync.Once
}

// dialQMP connects to the QMP socket and completes the capabilities
// handshake.
func dialQMP(ctx context.Context, sock string) (*monitor, error) {
	m, err := qmp.NewSocketMonitor("unix", sock, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("QMP %s: %w", sock, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- m.Connect() }()
	t := time.NewTimer(qmpGreetTimeout)
	defer t.Stop()
	select {
	case err := <-errc:
		if err != nil {
			m.Disconnect()
			return nil, fmt.Errorf("QMP %s: handshake: %w", sock, err)
		}
	case <-t.C:
		// go-qemu's Connect cannot be interrupted; it returns once the other
		// client leaves or QEMU exits, and this goroutine then closes it.
		go func() { <-errc; m.Disconnect() }()
		return nil, fmt.Errorf("QMP %s: no greeting within %s: another client holds the monitor", sock, qmpGreetTimeout)
	case <-ctx.Done():
		go func() { <-errc; m.Disconnect() }()
		return nil, ctx.Err()
	}
	raw, err := m.Events(ctx)
	if err != nil {
		m.Disconnect()
		return nil, fmt.Errorf("QMP %s: events: %w", sock, err)
	}
	mo := &monitor{sock: sock, mon: m, events: make(chan qmp.Event, 1024)}
	go func() {
		// Ends when the connection closes (go-qemu closes raw).
		defer close(mo.events)
		for e := range raw {
			select {
			case mo.events <- e:
			default: // nobody is reading: callers poll job state as well
			}
		}
	}()
	return mo, nil
}

// close ends the connection; calls in flight return errors.
func (m *monitor) close() {
	m.once.Do(func() { m.mon.Disconnect() })
}

// run executes cmd with args and decodes its "return" into out (if not nil).
// QEMU's error text is returned as the error.
func (m *monitor) run(ctx context.Context, cmd string, args, out any) error {
	b, err := json.Marshal(qmp.Command{Execute: cmd, Args: args})
	if err != nil {
		return err
	}
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b, err := m.mon.Run(b)
		ch <- result{b, err}
	}()
	var r result
	select {
	case r = <-ch:
	case <-ctx.Done():
		m.close() // unblocks Run
		<-ch
		return fmt.Errorf("QMP %s: %w", cmd, ctx.Err())
	}
	if r.err != nil {
		return fmt.Errorf("QMP %s: %w", cmd, r.err)
	}
	if out == nil {
		return nil
	}
	var env struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal(r.b, &env); err != nil {
		return fmt.Errorf("QMP %s: reply: %w", cmd, err)
	}
	if err := json.Unmarshal(env.Return, out); err != nil {
		return fmt.Errorf("QMP %s: reply %s: %w", cmd, env.Return, err)
	}
	return nil
}

// status is query-status's reply.
type status struct {
	Running bool   `json:"running"`
	Status  string `json:"status"` // running, paused, io-error, shutdown, ...
}

// blockJob is one entry of query-block-jobs.
type blockJob struct {
	Type     string `json:"type"`
	Device   string `json:"device"` // the job id
	Len      int64  `json:"len"`
	Offset   int64  `json:"offset"`
	Ready    bool   `json:"ready"`
	Status   string `json:"status"`
	IOStatus string `json:"io-status"`
	Error    string `json:"error"`
}

// blockInfo is one entry of query-block.
type blockInfo struct {
	Device   string `json:"device"`
	IOStatus string `json:"io-status"`
	Inserted *struct {
		File     string `json:"file"`
		NodeName string `json:"node-name"`
		Drv      string `json:"drv"`
	} `json:"inserted"`
}
