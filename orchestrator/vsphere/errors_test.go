package vsphere

import (
	"errors"
	"slices"
	"testing"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/task"
	"github.com/vmware/govmomi/vim25/progress"
	"github.com/vmware/govmomi/vim25/types"
)

func TestVCErr(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{
			name: "simulator task fault named by its Go type",
			err: task.Error{LocalizedMethodFault: &types.LocalizedMethodFault{
				Fault:            &types.InvalidPowerState{RequestedState: "poweredOn", ExistingState: "suspended"},
				LocalizedMessage: "*types.InvalidPowerState",
			}},
			want: "power on web01: InvalidPowerState (requested poweredOn, VM is suspended)",
		},
		{
			name: "vCenter task fault with its message and fault messages",
			err: task.Error{LocalizedMethodFault: &types.LocalizedMethodFault{
				Fault: &types.FileNotFound{FileFault: types.FileFault{VimFault: types.VimFault{MethodFault: types.MethodFault{
					FaultMessage: []types.LocalizableMessage{{Key: "msg.disk.noBackEnd", Message: "Cannot open the disk '/vmfs/volumes/x/web01.vmdk'"}},
				}}, File: "[rekindle] s-1/web01/web01.vmdk"}},
				LocalizedMessage: "File [rekindle] s-1/web01/web01.vmdk was not found",
			}},
			want: "power on web01: File [rekindle] s-1/web01/web01.vmdk was not found (Cannot open the disk '/vmfs/volumes/x/web01.vmdk')",
		},
		{
			name: "plain error",
			err:  errors.New("connection reset"),
			want: "power on web01: connection reset",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := vcErr(tc.err, "power on %s", "web01")
			if err.Error() != tc.want {
				t.Errorf("got  %q\nwant %q", err.Error(), tc.want)
			}
			if !errors.Is(err, tc.err) {
				t.Error("the vCenter error is not wrapped")
			}
		})
	}
	err := vcErr(task.Error{LocalizedMethodFault: &types.LocalizedMethodFault{Fault: &types.ManagedObjectNotFound{}}}, "x")
	if !fault.Is(err, &types.ManagedObjectNotFound{}) || !isNotFound(err) {
		t.Error("the fault is not reachable through the wrapped error")
	}
	if vcErr(nil, "x") != nil {
		t.Error("vcErr(nil) is not nil")
	}
}

type report struct {
	pct float32
	err error
}

func (r report) Percentage() float32 { return r.pct }
func (r report) Detail() string      { return "" }
func (r report) Error() error        { return r.err }

func TestForwardProgress(t *testing.T) {
	in := make(chan progress.Report)
	go func() {
		for _, r := range []report{{0, nil}, {10, nil}, {10, nil}, {5, nil}, {50.7, nil}, {60, errors.New("failed")}, {140, nil}} {
			in <- r
		}
		close(in)
	}()
	var got []int
	last := forwardProgress(in, func(p int) { got = append(got, p) })
	if want := []int{0, 10, 50, 100}; !slices.Equal(got, want) || last != 100 {
		t.Fatalf("reported %v (last %d), want %v", got, last, want)
	}
}
