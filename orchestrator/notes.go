package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"
)

// StepEvent is one thing a step did, said by the orchestrator or by the
// driver within the step (each escalation of a QEMU stop, the export
// withdrawn). runStep records the events with the step, as its detail's
// "events", so `sessions show` and the API show them after the fact, and
// emits each as a progress Event.
type StepEvent struct {
	Time    time.Time `json:"time"`
	Message string    `json:"message"`
}

type notesKey struct{}

type notes struct {
	mu     sync.Mutex
	events []StepEvent
	emit   func(string)
}

// Note records, within a step the orchestrator runs, what was just done;
// outside one (a driver called directly) it does nothing.
func Note(ctx context.Context, format string, args ...any) {
	n, ok := ctx.Value(notesKey{}).(*notes)
	if !ok {
		return
	}
	msg := fmt.Sprintf(format, args...)
	n.mu.Lock()
	n.events = append(n.events, StepEvent{Time: time.Now().UTC(), Message: msg})
	n.mu.Unlock()
	n.emit(msg)
}

func withNotes(ctx context.Context, emit func(string)) (context.Context, *notes) {
	n := &notes{emit: emit}
	return context.WithValue(ctx, notesKey{}, n), n
}

// withEvents adds the step's events to its detail: a detail that is
// nothing becomes {"events": [...]}, one that is a JSON object gets an
// "events" key; any other (a list) is kept as it is, the events then only
// emitted and logged.
func (n *notes) withEvents(detail any) any {
	n.mu.Lock()
	events := append([]StepEvent(nil), n.events...)
	n.mu.Unlock()
	if len(events) == 0 {
		return detail
	}
	if detail == nil {
		return map[string]any{"events": events}
	}
	b, err := json.Marshal(detail)
	if err != nil {
		return detail
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(b, &obj) != nil || obj == nil {
		return detail
	}
	if _, taken := obj["events"]; taken {
		return detail
	}
	eb, err := json.Marshal(events)
	if err != nil {
		return detail
	}
	obj["events"] = eb
	return obj
}
