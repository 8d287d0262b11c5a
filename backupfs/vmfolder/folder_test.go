package vmfolder

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/rekindle/rekindle/backupfs/repo"
)

// esxiVMX is a .vmx as ESXi 7 writes it, trimmed, with a CD-ROM, a disabled
// disk, a disk on a disabled controller and three NICs.
const esxiVMX = `.encoding = "UTF-8"
config.version = "8"
virtualHW.version = "19"
displayName = "web01"
guestOS = "ubuntu-64"
numvcpus = "2"
memSize = "4096"
firmware = "efi"
uuid.bios = "42 1b 6c 3e 8d 3a 9a 7f-1c 5b 2e 6a 7b 8c 9d 0E"
vc.uuid = "50 2c 11 22 33 44 55 66-77 88 99 aa bb cc dd ee"
nvram = "web01.nvram"
extendedConfigFile = "web01.vmxf"
annotation = "prod |22web|22 server"
scsi0.virtualDev = "pvscsi"
scsi0.present = "TRUE"
scsi0:0.deviceType = "scsi-hardDisk"
scsi0:0.fileName = "web01.vmdk"
scsi0:0.present = "TRUE"
scsi0:1.fileName = "web01_1.vmdk"
scsi0:1.present = "TRUE"
scsi0:2.fileName = "old.vmdk"
scsi0:2.present = "FALSE"
scsi0:10.fileName = "sub/web01_2.vmdk"
scsi0:10.present = "TRUE"
scsi1.present = "FALSE"
scsi1:0.fileName = "ghost.vmdk"
scsi1:0.present = "TRUE"
scsi2.present = "TRUE"
scsi2:3.fileName = "/vmfs/volumes/5f1a/web01/web01_3.vmdk"
scsi2:3.present = "false"
sata0.present = "TRUE"
sata0:0.deviceType = "cdrom-image"
sata0:0.fileName = "/vmfs/volumes/iso/ubuntu.iso"
sata0:0.present = "TRUE"
sata0:1.fileName = "web01_sata.vmdk"
sata0:1.present = "TRUE"
ide1:0.deviceType = "atapi-cdrom"
ide1:0.fileName = "CD/DVD drive 0"
ide1:0.present = "TRUE"
nvme0.present = "TRUE"
nvme0:0.fileName = "data.img"
nvme0:0.present = "TRUE"
ethernet0.virtualDev = "vmxnet3"
ethernet0.networkName = "VM Network"
ethernet0.addressType = "vpx"
ethernet0.generatedAddress = "00:50:56:9A:12:34"
ethernet0.present = "TRUE"
ethernet10.virtualDev = "e1000e"
ethernet10.dvs.portgroupId = "dvportgroup-42"
ethernet10.addressType = "static"
ethernet10.address = "00:50:56:00:00:01"
ethernet10.generatedAddress = "00:50:56:9a:ff:ff"
ethernet10.present = "TRUE"
ethernet2.present = "FALSE"
ethernet2.networkName = "Disconnected"
ethernet1.virtualDev = "e1000"
ethernet1.networkName = "backup"
ethernet1.addressType = "generated"
ethernet1.generatedAddress = "00:0c:29:aa:bb:cc"
ethernet1.present = "TRUE"
`

func writeFolder(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		writeFile(t, dir, name, []byte(body))
	}
	return dir
}

func TestOpen(t *testing.T) {
	dir := writeFolder(t, map[string]string{
		"web01.vmx":            esxiVMX,
		"web01.nvram":          "nvram",
		"web01.vmxf":           "<Foundry/>",
		"web01.vmsd":           "",
		"web01.vmx.lck":        "",
		"web01.vmdk":           "",
		"web01_1.vmdk":         "",
		"sub/web01_2.vmdk":     "",
		"web01_sata.vmdk":      "",
		"data.img":             "",
		"vmware.log":           "log",
		"web01-Snapshot1.vmsn": "",
	})
	f, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if f.Dir != dir || f.VMXPath != filepath.Join(dir, "web01.vmx") {
		t.Errorf("Dir %q VMXPath %q", f.Dir, f.VMXPath)
	}
	wantID := repo.VMIdentity{
		Name:         "web01",
		UUID:         "421b6c3e-8d3a-9a7f-1c5b-2e6a7b8c9d0e",
		InstanceUUID: "502c1122-3344-5566-7788-99aabbccddee",
		GuestOS:      "ubuntu-64",
		NumCPU:       2,
		MemoryMB:     4096,
		Firmware:     "efi",
		HWVersion:    19,
	}
	if f.Identity != wantID {
		t.Errorf("Identity = %+v\nwant %+v", f.Identity, wantID)
	}
	wantDisks := []DiskRef{
		{Controller: "nvme0:0", Adapter: "nvme", Path: filepath.Join(dir, "data.img"), Name: "data"},
		{Controller: "sata0:1", Adapter: "sata", Path: filepath.Join(dir, "web01_sata.vmdk"), Name: "web01_sata"},
		{Controller: "scsi0:0", Adapter: "pvscsi", Path: filepath.Join(dir, "web01.vmdk"), Name: "web01"},
		{Controller: "scsi0:1", Adapter: "pvscsi", Path: filepath.Join(dir, "web01_1.vmdk"), Name: "web01_1"},
		{Controller: "scsi0:10", Adapter: "pvscsi", Path: filepath.Join(dir, "sub", "web01_2.vmdk"), Name: "web01_2"},
	}
	if !reflect.DeepEqual(f.Disks, wantDisks) {
		t.Errorf("Disks =\n%+v\nwant\n%+v", f.Disks, wantDisks)
	}
	wantNICs := []repo.NIC{
		{Key: "ethernet0", Network: "VM Network", Type: "vmxnet3", MAC: "00:50:56:9a:12:34", AddressType: "vpx"},
		{Key: "ethernet1", Network: "backup", Type: "e1000", MAC: "00:0c:29:aa:bb:cc", AddressType: "generated"},
		{Key: "ethernet10", Network: "dvportgroup-42", Type: "e1000e", MAC: "00:50:56:00:00:01", AddressType: "static"},
	}
	if !reflect.DeepEqual(f.NICs, wantNICs) {
		t.Errorf("NICs =\n%+v\nwant\n%+v", f.NICs, wantNICs)
	}
	wantFiles := []string{
		filepath.Join(dir, "web01.vmx"),
		filepath.Join(dir, "web01.nvram"),
		filepath.Join(dir, "web01.vmsd"),
		filepath.Join(dir, "web01.vmxf"),
	}
	if !reflect.DeepEqual(f.ConfigFiles, wantFiles) {
		t.Errorf("ConfigFiles = %q, want %q", f.ConfigFiles, wantFiles)
	}
	if s, _ := f.VMX.Get("annotation"); s != `prod "web" server` {
		t.Errorf("annotation = %q", s)
	}
}

func TestOpenDefaults(t *testing.T) {
	// A Workstation-style vmx: no displayName, no virtualDev, nvram under
	// its default name, relative folder argument.
	dir := writeFolder(t, map[string]string{
		"db02.vmx": `scsi0.present = "TRUE"
scsi0:0.fileName = "db02.vmdk"
`,
		"db02.vmdk": "",
	})
	f, err := Open(dir + "/./")
	if err != nil {
		t.Fatal(err)
	}
	want := repo.VMIdentity{Name: "db02", Firmware: "bios"}
	if f.Identity != want {
		t.Errorf("Identity = %+v, want %+v", f.Identity, want)
	}
	if len(f.Disks) != 1 || f.Disks[0].Adapter != "lsilogic" || f.Disks[0].Name != "db02" {
		t.Errorf("Disks = %+v", f.Disks)
	}
	if len(f.NICs) != 0 || len(f.ConfigFiles) != 1 {
		t.Errorf("NICs %+v ConfigFiles %q", f.NICs, f.ConfigFiles)
	}
}

func TestOpenErrors(t *testing.T) {
	disk := func(fileName string) string {
		return "displayName = \"web01\"\nscsi0:1.present = \"TRUE\"\nscsi0:1.fileName = \"" + fileName + "\"\n"
	}
	tests := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{"no vmx", map[string]string{"web01.vmdk": ""}, []string{"no .vmx file"}},
		{"several vmx", map[string]string{"a.vmx": "", "b.vmx": ""}, []string{"a.vmx, b.vmx", "exactly one"}},
		{"malformed vmx", map[string]string{"web01.vmx": "a = \"1\"\nbroken line\n"}, []string{"web01.vmx", "line 2"}},
		{"binary vmx", map[string]string{"web01.vmx": "a\x00b"}, []string{"web01.vmx", "binary"}},
		{"missing disk", map[string]string{"web01.vmx": disk("web01_1.vmdk")}, []string{"scsi0:1.fileName", "web01_1.vmdk", "does not exist"}},
		{"parent folder", map[string]string{"web01.vmx": disk("../db02/db02.vmdk")}, []string{"scsi0:1.fileName", "../db02/db02.vmdk", "outside the VM folder"}},
		{"sneaky parent", map[string]string{"web01.vmx": disk("sub/../../x.vmdk")}, []string{"scsi0:1.fileName", "outside the VM folder"}},
		{"other datastore", map[string]string{"web01.vmx": disk("/vmfs/volumes/ds2/web01/web01_1.vmdk")}, []string{"scsi0:1.fileName", "/vmfs/volumes/ds2", "absolute path"}},
		{"empty file name", map[string]string{"web01.vmx": disk("")}, []string{"scsi0:1.fileName is empty"}},
		{"folder itself", map[string]string{"web01.vmx": disk("sub/..")}, []string{"scsi0:1.fileName", "not a file"}},
		{"disk is a directory", map[string]string{"web01.vmx": disk("sub"), "sub/x": ""}, []string{"scsi0:1.fileName", "not a regular file"}},
		{"nvram outside", map[string]string{"web01.vmx": "nvram = \"../x.nvram\"\n"}, []string{"nvram", "outside the VM folder"}},
		{"bad number", map[string]string{"web01.vmx": "numvcpus = \"two\"\n"}, []string{"numvcpus", "two"}},
		{"two disks one name", map[string]string{
			"web01.vmx": "scsi0:0.fileName = \"d.vmdk\"\nscsi0:1.fileName = \"d.img\"\n",
			"d.vmdk":    "", "d.img": "",
		}, []string{"scsi0:0", "scsi0:1", `"d"`}},
		{"two controllers one file", map[string]string{
			"web01.vmx": "scsi0:0.fileName = \"d.vmdk\"\nsata0:0.fileName = \"./d.vmdk\"\n",
			"d.vmdk":    "",
		}, []string{"sata0:0", "scsi0:0", "same disk file"}},
		{"bad disk name", map[string]string{
			"web01.vmx":    "scsi0:0.fileName = \".hidden.vmdk\"\n",
			".hidden.vmdk": "",
		}, []string{"scsi0:0.fileName", ".hidden"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(writeFolder(t, tt.files))
			if err == nil {
				t.Fatalf("no error, want one containing %q", tt.want)
			}
			t.Log(err)
			for _, s := range tt.want {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestOpenMissingFolder(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Fatal("no error for a missing folder")
	}
}
