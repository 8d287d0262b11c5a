package vmfolder

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseVMX(t *testing.T) {
	in := ".encoding = \"UTF-8\"\r\n" +
		"# a comment\n" +
		"\n" +
		"displayName = \"web01\"\n" +
		"  memSize=\"4096\"   # trailing comment\n" +
		"annotation = \"say |22hi|22 |7C pipe|0Aline2 |zz |4\"\n" +
		"numvcpus = 2\n" +
		"empty = \"\"\n" +
		"DisplayName = \"web01-renamed\"\n" +
		"scsi0:0.fileName = \"web 01.vmdk\"\n" +
		"tabbed\t=\t\"x\"\n"
	v, err := ParseVMX(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ key, want string }{
		{".encoding", "UTF-8"},
		{"displayname", "web01-renamed"}, // last one wins, case-insensitive
		{"DISPLAYNAME", "web01-renamed"},
		{"memsize", "4096"},
		{"annotation", "say \"hi\" | pipe\nline2 |zz |4"},
		{"numvcpus", "2"},
		{"empty", ""},
		{"SCSI0:0.FILENAME", "web 01.vmdk"},
		{"tabbed", "x"},
	}
	for _, tt := range tests {
		got, ok := v.Get(tt.key)
		if !ok || got != tt.want {
			t.Errorf("Get(%q) = %q, %v; want %q", tt.key, got, ok, tt.want)
		}
	}
	if _, ok := v.Get("missing"); ok {
		t.Error("Get(missing) found something")
	}
	wantKeys := []string{".encoding", "displayName", "memSize", "annotation", "numvcpus", "empty", "scsi0:0.fileName", "tabbed"}
	if got := v.Keys(); strings.Join(got, ",") != strings.Join(wantKeys, ",") {
		t.Errorf("Keys() = %q, want %q", got, wantKeys)
	}
}

func TestParseVMXErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"no equals", "a = \"1\"\njust words\n", []string{"line 2", "just words"}},
		{"empty key", "a = \"1\"\nb = \"2\"\n = \"3\"\n", []string{"line 3", "empty key"}},
		{"unterminated quote", "a = \"1\n", []string{"line 1", "closing quote"}},
		{"garbage after value", "a = \"1\" b\n", []string{"line 1", "after the closing quote"}},
		{"space in key", "a b = \"1\"\n", []string{"line 1", "key"}},
		{"stray quote", "a = 1\"2\n", []string{"line 1", "stray quote"}},
		{"control character", "a = \"1\x01\"\n", []string{"line 1", "control character"}},
		{"binary", "KDMV\x01\x00\x00\x00", []string{"binary data", "offset 5"}},
		{"huge", strings.Repeat("a = \"b\"\n", MaxVMXSize/8+1), []string{"larger than"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseVMX(strings.NewReader(tt.in))
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

func TestParseVMXExactlyMaxSize(t *testing.T) {
	line := "k = \"v\"\n"
	in := bytes.Repeat([]byte(line), MaxVMXSize/len(line))
	in = append(in, bytes.Repeat([]byte("#"), MaxVMXSize-len(in))...)
	if _, err := ParseVMX(bytes.NewReader(in)); err != nil {
		t.Fatalf("a vmx of exactly MaxVMXSize bytes: %v", err)
	}
}
