package vsphere

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/vim25/types"
)

// opError is an error from vCenter with what was being done. Its text is
// "<op>: <vCenter's message>"; it unwraps to govmomi's error, so callers can
// still test the fault with govmomi's fault.Is / fault.As.
type opError struct {
	op  string
	msg string
	err error
}

func (e *opError) Error() string { return e.op + ": " + e.msg }
func (e *opError) Unwrap() error { return e.err }

// vcErr wraps an error from a vCenter call, prefixed with what was being
// done. The text carries the fault's own messages: its localized message,
// its fault messages and those of its causes, and its type name where the
// server gave no text.
func vcErr(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return &opError{op: fmt.Sprintf(format, args...), msg: faultText(err), err: err}
}

func faultText(err error) string {
	// The simulator's task faults carry the Go type ("*types.InvalidState")
	// as their message; keep the fault's name.
	text := strings.TrimPrefix(err.Error(), "*types.")
	var parts []string
	add := func(s string) {
		s = strings.TrimSpace(s)
		if s == "" || strings.HasPrefix(s, "*types.") || strings.Contains(text, s) {
			return
		}
		for _, p := range parts {
			if strings.Contains(p, s) {
				return
			}
		}
		parts = append(parts, s)
	}
	fault.In(err, func(f types.BaseMethodFault, localized string, msgs []types.LocalizableMessage) bool {
		for _, m := range msgs {
			add(m.Message)
		}
		if localized != "" && !strings.HasPrefix(localized, "*types.") {
			add(localized)
			return false
		}
		// No text from the server: say what the fault's fields say.
		if detail := faultDetail(f); detail != "" {
			if name := faultName(f); name != text {
				detail = name + ": " + detail
			}
			add(detail)
		}
		return false
	})
	if text == "" {
		text = "unknown fault"
	}
	if len(parts) > 0 {
		text += " (" + strings.Join(parts, "; ") + ")"
	}
	return text
}

func faultName(f types.BaseMethodFault) string {
	t := reflect.TypeOf(f)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Name()
}

// faultDetail describes the fields of common faults that say what went wrong
// when the server's message does not.
func faultDetail(f types.BaseMethodFault) string {
	switch x := f.(type) {
	case *types.InvalidPowerState:
		return fmt.Sprintf("requested %s, VM is %s", x.RequestedState, x.ExistingState)
	case *types.ResourceInUse:
		return strings.TrimSpace(x.Type + " " + x.Name + " is in use")
	case *types.InvalidArgument:
		if x.InvalidProperty != "" {
			return "invalid " + x.InvalidProperty
		}
	case *types.DuplicateName:
		return fmt.Sprintf("name %q is taken", x.Name)
	case *types.AlreadyExists:
		return fmt.Sprintf("%s already exists", x.Name)
	case *types.FileNotFound:
		return fmt.Sprintf("file %s not found", x.File)
	case *types.FileAlreadyExists:
		return fmt.Sprintf("file %s already exists", x.File)
	case *types.SystemError:
		return x.Reason
	case *types.SystemErrorFault:
		return x.Reason
	case *types.InvalidDeviceSpec:
		return fmt.Sprintf("device change %d is not valid", x.DeviceIndex)
	case *types.ManagedObjectNotFound:
		return fmt.Sprintf("%s does not exist", x.Obj)
	}
	return ""
}

func isNotFound(err error) bool {
	return fault.Is(err, &types.ManagedObjectNotFound{})
}

// IsLoginRefused reports whether vCenter refused the user name or password
// (InvalidLogin), as opposed to not being reached or not trusted.
func IsLoginRefused(err error) bool {
	return fault.Is(err, &types.InvalidLogin{})
}
